"""benchmarks/serve.py at CI size: it runs every mode and writes what it promises (no speed assertions)."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from benchmarks import serve as bench


def test_quick_run_writes_table_json_and_plot(serve_model, tmp_path) -> None:
    out = tmp_path / "bench"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = bench.main(["--quick", "--onnx", str(serve_model), "--budget", "0.5", "--out", str(out)])
    assert {p.name for p in out.iterdir()} == {"serve.json", "serve.md", "serve.png"}
    assert (out / "serve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads((out / "serve.json").read_text())["rows"]
    cases = {(r["mode"], r["concurrency"], r["batch"]) for r in rows}
    batch_modes = ("in-process batch", "in-process batch, no spinning")
    assert cases == {(m, c, 1) for m in bench.MODES for c in (1, 4)} | {(m, 1, b) for m in batch_modes for b in (1, 4)}
    assert all(r["requests"] >= 2 * r["concurrency"] and r["images_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] for r in rows)
    (summary,) = result["summary"]
    assert summary["serve_over_in_process"] > 0 and summary["serve_p99_ms_at_16"] is None  # 16 clients not run
    assert "## Target" in printed.getvalue() and "served / in-process" in printed.getvalue()
    with pytest.raises(SystemExit, match="--force"):  # results are never overwritten by default
        bench.parse_args(["--quick", "--out", str(out)])
    assert bench.parse_args(["--quick", "--out", str(out), "--force"]).out == out
