"""The C library cross-built for aarch64, run under qemu-user: its C tests, and the same classes and scores as x86.

    python -m tests.runtime.aarch64 X86_BUILD ARM_BUILD WORKDIR [MODEL]

`make -C runtime/c test-aarch64` builds both and runs this from the repository root. It writes the test inputs into
WORKDIR (toy contract models, class files, PPM images, a raw NV12 clip), runs test_errors and test_classes, and
classify and camera on the toy model (and on MODEL, an exported model, if given) with both builds. With MODEL it also
runs the Python runtime on aarch64: Debian's arm64 CPython (this machine's Debian suite, fetched with a private apt
state, nothing installed) with PyPI's aarch64 wheels of numpy, Pillow and onnxruntime, under qemu, classifying the
images and an NV12 frame as this machine's Python does (skipped with the reason where they cannot be had). Prints
"ok <check>: ..." or "FAIL <check>: ...", the largest score difference between the builds, and "N passed, N failed";
exits 1 if any check failed. Debian packages: gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, libstdc++6-arm64-cross,
qemu-user.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from .contract_model import TOY_IDENTITY, build_contract_model, toy_class_set

SYSROOT = Path("/usr/aarch64-linux-gnu")
TOLERANCE = 1e-4  # largest score difference accepted between the aarch64 and x86 builds
#: One /proc/cpuinfo block per CPU (ONNX Runtime's cpuinfo reads one per CPU that /sys lists, and crashes under qemu on
#: the host's x86 /proc/cpuinfo): an ARMv8.2 core (a Cortex-A78AE, as in a Jetson Orin).
CPU_BLOCK = """processor\t: {index}
BogoMIPS\t: 62.50
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd42
CPU revision\t: 1

"""


def cpu_indices(listing: str) -> list[int]:
    """The CPUs of a /sys/devices/system/cpu list such as "0-3,6"."""
    indices = []
    for part in listing.strip().split(","):
        first, _, last = part.partition("-")
        indices.extend(range(int(first), int(last or first) + 1))
    return indices


def qemu_command(build: Path, command: list, qemu_options: list[str] = ()) -> list[str]:
    """`command` (an aarch64 program and its arguments) under qemu-aarch64, with an ARM /proc/cpuinfo bind-mounted in a
    private mount namespace (as root; otherwise in a user namespace, where the kernel allows it)."""
    cpuinfo = build / "cpuinfo"
    present = Path("/sys/devices/system/cpu/present").read_text()
    cpuinfo.write_text("".join(CPU_BLOCK.format(index=i) for i in cpu_indices(present)))
    unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]
    script = 'mount --bind "$0" /proc/cpuinfo && exec qemu-aarch64 -L "$1" "${@:2}"'
    options = [part for option in qemu_options for part in option.split(" ", 1)]
    return [*unshare, "bash", "-c", script, str(cpuinfo), str(SYSROOT), *options, *map(str, command)]


#: Debian packages of an arm64 CPython X.Y and the libraries its standard library loads ({v}: X.Y).
PYTHON_PACKAGES = ("python{v}-minimal", "libpython{v}-minimal", "libpython{v}-stdlib", "libexpat1", "zlib1g", "libffi8",
                   "libssl3", "libbz2-1.0", "liblzma5", "libuuid1", "libsqlite3-0", "libncursesw6", "libtinfo6")
#: Run by this machine's Python and by the arm64 one: classify the images and the NV12 clip's first frame, print JSON.
PREDICT = """
import json, sys
from semobridge_runtime import Classifier, Frame
model, clip, images = sys.argv[1], sys.argv[2], sys.argv[3:]
frame = Frame(open(clip, "rb").read()[:72 * 48 * 3 // 2], 64, 48, "nv12", stride=72)
result = Classifier.load(model, providers=["CPUExecutionProvider"], intra_op_num_threads=1).predict([*images, frame])
print(json.dumps({"labels": result.labels.tolist(), "scores": result.scores.tolist()}))
"""


def apt_download(folder: Path, packages: list[str]) -> None:
    """Download arm64 .deb files of this machine's Debian suite into folder with a private apt state (as
    runtime/c/fetch_ort_headers.sh does for the headers); raises OSError or CalledProcessError."""
    sources = Path(os.environ.get("SB_APT_SOURCES", "/etc/apt/sources.list.d/debian.sources")).read_text()
    uri = next(u for u in re.findall(r"^URIs:\s*(.*)$", sources, re.M)[0].split() if re.search(r"/debian/?$", u))
    suite = re.findall(r"^Suites:\s*(\S+)", sources, re.M)[0]
    keyring = (re.findall(r"^Signed-By:\s*(\S+)", sources, re.M) or ["/usr/share/keyrings/debian-archive-keyring.gpg"])[0]
    state = folder / "apt"
    for sub in ("lists/partial", "archives/partial"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "sources.list").write_text(f"deb [arch=arm64 signed-by={keyring}] {uri} {suite} main\n")
    options = [f"-oDir::Etc::SourceList={state / 'sources.list'}", "-oDir::Etc::SourceParts=/dev/null",
               f"-oDir::State::Lists={state / 'lists'}", f"-oDir::Cache::archives={state / 'archives'}",
               "-oDir::Cache::pkgcache=", "-oDir::Cache::srcpkgcache=", "-oDir::State::status=/dev/null",
               "-oAPT::Sandbox::User=root", "-oAPT::Architecture=arm64", "-oAPT::Architectures=arm64"]
    subprocess.run(["apt-get", "-q", *options, "update"], check=True, capture_output=True, timeout=300)
    subprocess.run(["apt-get", "-q", *options, "download", *packages], check=True, capture_output=True, timeout=300,
                   cwd=folder)


def arm64_python(folder: Path) -> tuple[list[str], str]:
    """(qemu options, the arm64 Python) once they are in folder, or ([], why not)."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    root, site = folder / "root", folder / "site"
    try:
        if not (root / "usr" / "bin" / f"python{version}").exists():
            debs = folder / "debs"
            debs.mkdir(parents=True, exist_ok=True)
            apt_download(debs, [p.format(v=version) for p in PYTHON_PACKAGES])
            for deb in sorted(debs.glob("*.deb")):
                subprocess.run(["dpkg", "-x", deb, root], check=True, capture_output=True)
        if not (site / "onnxruntime").exists():
            import onnxruntime
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", site, "--only-binary=:all:",
                            "--implementation", "cp", "--python-version", version,
                            *(f"--platform=manylinux_2_{k}_aarch64" for k in (28, 17)), "--platform=manylinux2014_aarch64",
                            f"onnxruntime=={onnxruntime.__version__}", "numpy", "pillow"],
                           check=True, capture_output=True, timeout=600)
    except (OSError, StopIteration, IndexError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        return [], f"cannot fetch an arm64 Python {version} or its aarch64 wheels here ({exc} {detail[-300:]!r})"
    libraries = ":".join(glob.glob(str(root / "usr" / "lib" / "aarch64-linux-gnu")) +
                         glob.glob(str(root / "lib" / "aarch64-linux-gnu")))
    runtime = Path(__file__).resolve().parents[2] / "runtime"
    return [f"-E LD_LIBRARY_PATH={libraries}", f"-E PYTHONHOME={root / 'usr'}", f"-E PYTHONPATH={site}:{runtime}",
            "-E PYTHONDONTWRITEBYTECODE=1"], str(root / "usr" / "bin" / f"python{version}")


def write_inputs(folder: Path) -> dict[str, object]:
    """The models, class files, images and NV12 clip the checks use."""
    from semobridge_runtime.classes import ClassSet

    folder.mkdir(parents=True, exist_ok=True)

    def model(name: str, **options) -> Path:  # each in its own folder, beside its sidecar
        (folder / name).mkdir(exist_ok=True)
        return build_contract_model(folder / name / "model.onnx", **options)

    good = model("good")
    truncated = folder / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[:300])
    errors = [good, model("float", kind="float"), model("not_ours", metadata=False), truncated, folder / "missing.onnx"]
    toy = model("toy", head_as_data=True, seed=3)
    class_files = []
    for seed, names in ((1, ("a", "b", "c", "Große Straße 🐋")), (2, ("w", "x", "y", "z"))):
        path = folder / f"{names[0]}.classes"
        ClassSet(names, *toy_class_set(len(names), TOY_IDENTITY.embedding_dim, seed)).save(path, TOY_IDENTITY)
        class_files.append(path)
    rng = np.random.default_rng(11)
    images = []
    for i, (h, w) in enumerate([(40, 40), (17, 23), (96, 80)]):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        images.append(folder / f"image{i}.ppm")
        images[-1].write_bytes(b"P6\n%d %d\n255\n" % (w, h) + pixels.tobytes())
    clip = folder / "clip.yuv"  # three 64x48 NV12 frames with 72-byte rows
    clip.write_bytes(rng.integers(0, 256, 3 * 72 * 48 * 3 // 2, dtype=np.uint8).tobytes())
    return {"errors": errors, "toy": toy, "class_files": class_files, "images": images, "clip": clip}


def scores_of(stdout: str) -> tuple[list[int], np.ndarray]:
    """Labels and score rows from `classify --scores` or `camera --scores`."""
    labels = [int(m) for m in re.findall(r"^(?:  label|frame \d+) (\d+)", stdout, re.M)]
    rows = [np.array(line.split()[1:], np.float64) for line in stdout.splitlines() if line.startswith("  scores")]
    return labels, np.array(rows)


def predictions(stdout: str) -> tuple[list[int], np.ndarray]:
    """Labels and scores from PREDICT's JSON."""
    result = json.loads(stdout.strip().splitlines()[-1])
    return result["labels"], np.array(result["scores"])


class Checks:
    """Counts and prints checks."""

    def __init__(self) -> None:
        self.passed = self.failed = 0
        self.max_difference = 0.0

    def expect(self, ok: bool, name: str, detail: str = "") -> None:
        print(f"{'ok' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""), flush=True)
        self.passed += ok
        self.failed += not ok

    def program(self, name: str, command: list[str]) -> subprocess.CompletedProcess:
        """Run a C test program that prints ok/FAIL lines: count them, and its exit status as one more check."""
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        for line in done.stdout.splitlines():
            if line.startswith(("ok ", "FAIL ")):
                self.expect(line.startswith("ok "), f"{name}: {line.split(' ', 1)[1].split(':')[0]}",
                            line.split(": ", 1)[-1] if line.startswith("FAIL") else "")
        self.expect(done.returncode == 0, f"{name} exits 0",
                    "" if done.returncode == 0 else f"exit status {done.returncode}: {done.stderr[-2000:]}")
        return done

    def parity(self, name: str, x86: list, arm: list, parse=scores_of) -> None:
        """The same command with both builds: the same labels, scores within TOLERANCE."""
        done = [subprocess.run(command, capture_output=True, text=True, timeout=600) for command in (x86, arm)]
        if any(d.returncode != 0 for d in done):
            self.expect(False, name, " | ".join(f"exit {d.returncode}: {d.stderr[-1000:]}" for d in done))
            return
        (x_labels, x_scores), (a_labels, a_scores) = (parse(d.stdout) for d in done)
        difference = float(np.abs(x_scores - a_scores).max()) if x_scores.shape == a_scores.shape else np.inf
        self.max_difference = max(self.max_difference, difference)
        self.expect(x_labels == a_labels and len(x_labels) > 0 and difference <= TOLERANCE, name,
                    f"{len(x_labels)} labels {'equal' if x_labels == a_labels else f'{x_labels} vs {a_labels}'}, "
                    f"max |score difference| {difference:.3g}")


def main(x86: Path, arm: Path, work: Path, model: Path | None) -> int:
    inputs = write_inputs(work)
    checks = Checks()
    checks.program("test_errors", qemu_command(arm, [arm / "tests" / "test_errors", *inputs["errors"]]))
    checks.program("test_classes", qemu_command(arm, [arm / "tests" / "test_classes", "--threads", "2", "--calls", "3",
                                                      inputs["toy"], *inputs["class_files"]]))
    for name, path in [("toy model", inputs["errors"][0])] + ([("exported model", model)] if model else []):
        classify = ["--scores", "--threads", "1", path, *inputs["images"]]
        checks.parity(f"classify, {name}", [x86 / "examples" / "classify", *classify],
                      qemu_command(arm, [arm / "examples" / "classify", *classify]))
        camera = ["--scores", "--threads", "1", "--stride", "72", path, "64", "48", inputs["clip"]]
        checks.parity(f"camera (NV12), {name}", [x86 / "examples" / "camera", *camera],
                      qemu_command(arm, [arm / "examples" / "camera", *camera]))
    if model:
        options, python = arm64_python(arm / "python")
        if not options:
            print(f"skip Python runtime on aarch64: {python}")
        else:
            arguments = [model, inputs["clip"], *inputs["images"]]
            checks.parity("Python runtime, exported model", [sys.executable, "-c", PREDICT, *arguments],
                          qemu_command(arm, [python, "-c", PREDICT, *arguments], options), parse=predictions)
    print(f"aarch64 vs x86: max |score difference| {checks.max_difference:.3g} (tolerance {TOLERANCE:g})")
    print(f"{checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    sys.exit(main(*map(Path, sys.argv[1:4]), Path(sys.argv[4]) if len(sys.argv) == 5 else None))
