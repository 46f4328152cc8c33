"""The C library's hand-written readers under libFuzzer with AddressSanitizer and UndefinedBehaviorSanitizer.

`make -C runtime/c fuzz` builds four targets (runtime/c/fuzz): JSON (json.c), class files (classes.c, read for the
toy model), a model's class names (the semobridge.class_names metadata, checked at sb_open) and camera frames
(frames.c: sb_frame_to_rgb on any fields and plane sizes). Each is seeded with the committed text seeds
(runtime/c/fuzz/seeds) and what the tests themselves feed the library: the toy class files, every bad class file of
test_c_classes.BAD_FILES, their JSON headers and names, the toy model's metadata, a small frame of each layout. Any crash,
leak, sanitizer report, hang or broken invariant (the targets' CHECKs) fails the test.

Budget: SB_FUZZ_SECONDS per target (default 20), all at once, so the test takes about 20 s plus the build
(a few seconds) and the suite stays within its 8 minutes. Seeded this way, 10 s already reach 85-96 % of the edges a
10-minute campaign reaches (runtime/c/fuzz/README.md has the campaign's figures): enough to catch a regression on
the paths the tests' inputs reach, every run. A campaign keeps its corpus:
SB_FUZZ_SECONDS=600 SB_FUZZ_CORPUS=/some/folder python -m pytest -s tests/runtime/test_c_fuzz.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from semobridge_runtime import tensorfile

from .conftest import C_DIR
from .contract_model import contract_metadata
from .test_c_classes import bad_files, split, toy_files  # noqa: F401  (fixtures)

FUZZ_SECONDS = int(os.environ.get("SB_FUZZ_SECONDS", "20"))
TARGETS = ("json", "classes", "names", "frames")
SEEDS = C_DIR / "fuzz" / "seeds"
STATS = re.compile(r"^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb):\s+(\d+)", re.M)


def libfuzzer_missing() -> str | None:
    """Why clang cannot build a libFuzzer target with ASan/UBSan here, or None."""
    if shutil.which("clang") is None:
        return "clang is not installed (apt-get install clang libclang-rt-dev)"
    probe = subprocess.run(["clang", "-fsanitize=fuzzer,address,undefined", "-x", "c", "-", "-o", "/dev/null"],
                           input="#include <stddef.h>\n#include <stdint.h>\n"
                                 "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void) d; (void) n; return 0; }\n",
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return ("clang lacks libFuzzer's runtime (apt-get install libclang-rt-dev, or libclang-rt-14-dev for clang 14): "
                + probe.stderr.strip()[-300:])
    return None


@pytest.fixture(scope="module")
def fuzzers() -> Path:
    reason = libfuzzer_missing()
    if reason:
        pytest.skip(reason)
    made = subprocess.run(["make", "-C", str(C_DIR), "fuzz", f"PYTHON={sys.executable}"], capture_output=True, text=True,
                          timeout=600)
    assert made.returncode == 0, made.stdout + made.stderr
    return C_DIR / "build" / "fuzz"


@pytest.fixture(scope="module")
def corpus(toy_files, bad_files, tmp_path_factory) -> Path:  # noqa: F811
    """corpus/{json,classes,names}: the committed seeds and the tests' own inputs (SB_FUZZ_CORPUS: kept there)."""
    root = Path(os.environ["SB_FUZZ_CORPUS"]) if os.environ.get("SB_FUZZ_CORPUS") else tmp_path_factory.mktemp("corpus")
    for target in TARGETS:
        (root / target).mkdir(parents=True, exist_ok=True)
        if (SEEDS / target).is_dir():
            for seed in (SEEDS / target).iterdir():
                shutil.copy(seed, root / target / seed.name)

    def add(target: str, name: str, data: bytes) -> None:
        (root / target / name).write_bytes(data)

    files = [*toy_files, *(path for path, _, _ in bad_files.values() if path.is_file() and path.stat().st_size < 1 << 20)]
    for i, path in enumerate(files):
        data = path.read_bytes()
        add("classes", f"test-{i:02d}.classes", data)
        try:
            add("json", f"header-{i:02d}.json", split(data)[0].encode("latin-1"))
        except ValueError:  # cut short, or a header length over the limit: no JSON to take (the file is a seed above)
            pass
    for i, path in enumerate(toy_files):
        add("names", f"toy-{i}.txt", tensorfile.read(path)[0]["class_names"].tobytes())
    for layout, depth in enumerate((3, 3, 4, 4, 1)):  # a 6x4 frame of each sb_layout, packed and with padded rows
        for pad in (0, 5):
            row, stride = 6 * depth, 6 * depth + pad if pad else 0
            sizes = (3 * (stride or row) + row, (stride or 6) + 6 if layout == 4 else 0)
            fields = struct.pack("<bBhhhhBBII4x", layout, 1, 6, 4, stride, stride, 1, 1, *sizes)
            add("frames", f"frame-{layout}-{pad}", fields + bytes(range(0, 250, 7)))
    meta = contract_metadata(["red fox", "blue whale"], "uint8", ["N", "H", "W", 3], 8)
    add("json", "metadata.json", json.dumps(meta).encode())
    add("names", "metadata.txt", "\n".join(meta["class_names"]).encode())
    return root


def final_stats(log: str) -> dict[str, int]:
    """libFuzzer's last status line (cov, ft, corpus entries) and its -print_final_stats figures."""
    stats = {k: int(v) for k, v in STATS.findall(log)}
    last = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)/", log)
    if last:
        stats.update(zip(("cov", "ft", "corpus"), map(int, last[-1])))
    return stats


def test_c_readers_survive_libfuzzer(fuzzers, corpus, tmp_path) -> None:
    runs = {}
    for target in TARGETS:
        (tmp_path / target).mkdir()
        command = [str(fuzzers / f"fuzz_{target}"), f"-max_total_time={FUZZ_SECONDS}", "-print_final_stats=1",
                   "-timeout=10", "-malloc_limit_mb=2048", "-rss_limit_mb=4096", f"-artifact_prefix={tmp_path / target}/",
                   str(corpus / target)]
        log = open(tmp_path / f"{target}.log", "w+")
        runs[target] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log)
    failures = []
    for target, (process, log) in runs.items():
        process.wait(timeout=FUZZ_SECONDS + 300)
        log.seek(0)
        text = log.read()
        log.close()
        found = sorted(p.name for p in (tmp_path / target).iterdir())
        print(f"fuzz_{target}: {final_stats(text)}")
        if process.returncode != 0 or found or "ERROR:" in text or "runtime error:" in text:
            failures.append(f"fuzz_{target} (exit {process.returncode}, artifacts {found}):\n{text[-4000:]}")
    assert not failures, "\n\n".join(failures)
