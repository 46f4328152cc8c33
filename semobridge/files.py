"""Files: atomic output (a failure leaves nothing half-written behind, an existing file keeps its mode) and content hashes."""
from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from .validate import output_file


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, what: str = "output file") -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    Only a regular, writable file is ever replaced (validate.output_file); it keeps its permission
    bits. A new file gets the usual mode (0666 less the umask).
    """
    path = output_file(path, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
        output_file(path, what)  # the target may have changed kind while we worked
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
