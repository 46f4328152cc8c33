"""semobridge-serve's memory under a soak of mixed request sizes: flat after warm-up, or not.

Starts `semobridge-serve MODEL` (its own process tree: the command with its HTTP front door, tritonserver,
the Python-backend stub that runs the model), then `--clients` threads send, for `--seconds`, requests
drawn from a fixed mix: small and large images, batches of 1 to 16, over HTTP and gRPC, pixels and
PNG files, and a few refused ones (over the per-request budget, malformed). Memory is the summed PSS
(proportional set size: shared memory counted once) of the server's processes, sampled every 0.5 s.

    python -m benchmarks.serve_soak --onnx artifacts/model.onnx --seconds 120
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/serve_soak.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.common import free_ports

# (height, width, images per request): from thumbnails to a 16-image batch of 1024x1024 (48 MiB)
MIX = ((64, 64, 1), (224, 224, 16), (480, 640, 4), (1024, 1024, 2), (2048, 2048, 1), (1024, 1024, 16), (96, 128, 8))
MIB = 1 << 20


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (Linux /proc: each thread's children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                children = [int(child) for child in (task / "children").read_text().split()]
                found += children
                todo += children
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def tree_pss(pid: int) -> int:
    """Summed PSS in bytes of a process and all its descendants (Linux /proc)."""
    total = 0
    for current in (pid, *descendants(pid)):
        try:
            with open(f"/proc/{current}/smaps_rollup") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total


def requests(seed: int, mix: tuple[tuple[int, int, int], ...] = MIX) -> list[tuple[str, np.ndarray | list[bytes]]]:
    """The mix, seeded: ('pixels', batch) or ('png', files) per request."""
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    out: list[tuple[str, np.ndarray | list[bytes]]] = []
    for h, w, n in mix:
        batch = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
        out.append(("pixels", batch))
        if h * w <= 480 * 640:
            files = []
            for image in batch:
                buffer = io.BytesIO()
                Image.fromarray(image).save(buffer, "PNG")
                files.append(buffer.getvalue())
            out.append(("png", files))
    return out


def soak(http_url: str, grpc_url: str, seconds: float, clients: int = 4, seed: int = 0,
         mix: tuple[tuple[int, int, int], ...] = MIX) -> dict[str, int]:
    """Send the mix for `seconds` from `clients` threads; counts of requests answered, refused and failed."""
    from semobridge_runtime import InputError
    from semobridge_runtime.serve import RemoteClassifier

    items = requests(seed, mix)
    counts = {"answered": 0, "refused": 0, "failed": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        rng = np.random.default_rng(seed + index)
        with RemoteClassifier(http_url if index % 2 else grpc_url, timeout_s=300) as remote:
            while time.monotonic() < deadline:
                kind, item = items[int(rng.integers(len(items)))]
                try:
                    if rng.random() < 0.05:
                        remote.predict_encoded(b"\x89PNG not really")
                    elif kind == "png":
                        remote.predict_encoded(item)
                    else:
                        remote.predict(item)
                    outcome = "answered"
                except InputError:
                    outcome = "refused"
                except Exception:  # noqa: BLE001  (counted: a soak reports, it does not stop)
                    outcome = "failed"
                with lock:
                    counts[outcome] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 600)
    return counts


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve_soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", type=Path, required=True, help="exported model.onnx to serve")
    p.add_argument("--seconds", type=float, default=120.0, help="soak length (default %(default)s)")
    p.add_argument("--warmup", type=float, default=20.0, help="seconds of the same mix before the baseline (default %(default)s)")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients (default %(default)s)")
    p.add_argument("--serve-args", default="", help="more semobridge-serve options, e.g. '--max-request-mb 64'")
    args = p.parse_args(argv)
    http, grpc, metrics = free_ports(3)
    server = subprocess.Popen([sys.executable, "-m", "semobridge_runtime.serve.cli", str(args.onnx), "--address",
                               "127.0.0.1", "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port",
                               str(metrics), *args.serve_args.split()], stdout=subprocess.PIPE, text=True)
    try:
        if "ready" not in (server.stdout.readline() or ""):
            raise SystemExit("semobridge-serve did not start")
        started = tree_pss(server.pid)
        urls = f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc}"
        warm = soak(*urls, args.warmup, args.clients, seed=1)
        baseline = tree_pss(server.pid)
        samples, stop = [], threading.Event()

        def sample() -> None:
            while not stop.wait(0.5):
                samples.append(tree_pss(server.pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        counts = soak(*urls, args.seconds, args.clients, seed=2)
        stop.set()
        sampler.join()
        end = tree_pss(server.pid)
        time.sleep(2.0)
        idle = tree_pss(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=120)
    result = {"started_mib": started / MIB, "after_warmup_mib": baseline / MIB, "peak_mib": max(samples, default=0) / MIB,
              "end_mib": end / MIB, "idle_mib": idle / MIB, "growth_mib": (idle - baseline) / MIB, **counts,
              "warmup_requests": sum(warm.values())}
    print(f"semobridge-serve PSS (MiB): started {result['started_mib']:.0f}, after {args.warmup:.0f} s warm-up "
          f"{result['after_warmup_mib']:.0f}, peak {result['peak_mib']:.0f} during {args.seconds:.0f} s of soak, "
          f"end {result['end_mib']:.0f}, 2 s idle {result['idle_mib']:.0f} (growth {result['growth_mib']:+.0f}); "
          f"requests {counts}")
    return result


if __name__ == "__main__":
    main()
