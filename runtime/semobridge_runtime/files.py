"""Every file semobridge reads or writes goes through here: one bounded reader, one atomic writer.

Reading: regular files only (a FIFO, a device or a folder is refused with an error that says so,
and opening never blocks: O_NONBLOCK), and the size is checked against a cap for the file's kind
BEFORE anything is read (as the C library does for class files). The caps, in bytes:

| kind                                        | constant         | cap      |
|---------------------------------------------|------------------|----------|
| model file, head.safetensors, class file    | MODEL_BYTES      | 4 GiB    |
| ONNX graph, TensorRT engine (read whole)    | GRAPH_BYTES      | 8 GiB    |
| image file                                  | IMAGE_BYTES      | 1 GiB    |
| embedding arrays (.npz, .npy)               | ARRAY_BYTES      | 16 GiB   |
| CSV list of images                          | CSV_BYTES        | 256 MiB  |
| JSON (manifest, metadata, splits), text     | TEXT_BYTES       | 64 MiB   |

Writing: `atomic_output` / `write_atomic` write beside the target and move into place only on
success; only a regular, writable file is ever replaced (`check_output`), and it keeps its
permission bits. The library (semobridge), the exporter and the runtime all use these functions.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import InputError, SemobridgeError

MODEL_BYTES = 4 << 30
GRAPH_BYTES = 8 << 30
IMAGE_BYTES = 1 << 30
ARRAY_BYTES = 16 << 30
CSV_BYTES = 256 << 20
TEXT_BYTES = 64 << 20

_KINDS = ((stat.S_ISFIFO, "a pipe (FIFO)"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def _not_regular(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str | os.PathLike, what: str, limit: int,
                 error: type[SemobridgeError] = InputError) -> BinaryIO:
    """Open a regular file of at most `limit` bytes for binary reading (the caller closes it).

    `what` names the file's role in messages ("class file", "image"); `error` is the kind raised
    (InputError for what the user passes as data, ModelError for model and class files).
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block the open
    except FileNotFoundError:
        raise error(f"cannot read {what} {path}: it does not exist", hint="check the path") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}", hint="check the path and its permissions") from None
    try:
        mode, size = (st := os.fstat(fd)).st_mode, st.st_size
        if stat.S_ISDIR(mode):
            raise error(f"{what} {path} is a directory, not a file", hint=f"pass the {what} itself")
        if not stat.S_ISREG(mode):
            raise error(f"{what} {path} is {_not_regular(mode)}, not a regular file",
                        hint=f"save the {what} to a regular file and pass that")
        if size > limit:
            raise error(f"{what} {path} has {size:,} bytes, over the limit of {limit:,} for a {what}",
                        hint=f"pass a {what} written by semobridge, or check the path")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | os.PathLike, what: str, limit: int, error: type[SemobridgeError] = InputError) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (see open_regular)."""
    with open_regular(path, what, limit, error) as f:
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:  # it grew after the check
        raise error(f"{what} {path} has over {limit:,} bytes, the limit for a {what}")
    return data


def read_text(path: str | os.PathLike, what: str, limit: int = TEXT_BYTES,
              error: type[SemobridgeError] = InputError) -> str:
    """A UTF-8 text file of at most `limit` bytes (see open_regular), without the byte order mark some editors put first
    (it would start the first class name, which the class-name rule refuses as an invisible character)."""
    try:
        return read_bytes(path, what, limit, error).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.start})", hint=f"save the {what} as UTF-8") from None


def check_regular(path: str | os.PathLike, what: str, limit: int, error: type[SemobridgeError] = InputError) -> Path:
    """The same checks without keeping the file open, for files a library opens itself (ONNX Runtime)."""
    open_regular(path, what, limit, error).close()
    return Path(path)


def file_sha256(path: str | os.PathLike, what: str = "file", limit: int = GRAPH_BYTES,
                error: type[SemobridgeError] = InputError) -> str:
    """SHA-256 (hex) of a regular file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open_regular(path, what, limit, error) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------- writing


def check_output(path: str | os.PathLike, what: str = "output file") -> Path:
    """A path we may write a file to: not an existing non-regular file (a device, a FIFO, a folder), not a
    read-only file, in a folder that exists (or can be made) and is writable. Checked before work starts."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise InputError(f"{what} {path} exists and is not a regular file", hint="choose another path")
        if not path.stat().st_mode & 0o222 or not os.access(path, os.W_OK):  # root passes access() on any mode
            raise InputError(f"{what} {path} is read-only", hint="make it writable (chmod u+w) or choose another path")
    check_output_dir(path.parent, f"the folder of {what} {path}")
    return path


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """A folder we may write into: an existing writable folder, or one that can be created."""
    path = Path(path)
    existing = path
    while not existing.exists():
        if existing.is_symlink():
            raise InputError(f"{what} {path} goes through a broken link {existing}")
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{what} {path}: {existing} is not a folder", hint="choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{what} {path}: {existing} is not writable", hint="choose a folder you can write to")
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, what: str = "output file") -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    Only a regular, writable file is ever replaced (check_output); it keeps its permission bits.
    A new file gets the usual mode (0666 less the umask). On failure nothing is left behind.
    """
    path = check_output(path, what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InputError(f"cannot write {what} {path}: {exc.strerror or exc}") from None
    os.close(fd)
    try:
        yield Path(tmp)
        if path.is_file():
            mode = stat.S_IMODE(path.stat().st_mode)
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask  # mkstemp makes 0600
        os.chmod(tmp, mode)
        check_output(path, what)  # the target may have changed kind while we worked
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_atomic(path: str | os.PathLike, data: bytes, what: str = "output file") -> Path:
    """Write `data` to `path` under the output rule (atomic_output), synced to disk; InputError if the target
    cannot be written, and then the old file (if any) stays as it was."""
    path = Path(path)
    try:
        with atomic_output(path, what) as tmp, open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise InputError(f"cannot write {what} {path}: {exc.strerror or exc}; nothing was changed there") from exc
    return path
