"""The benchmark harnesses run end to end at CI size and write what they promise (no timing assertions)."""
from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
from pathlib import Path

import pytest
import torch

from benchmarks import accuracy, classes, fit_time, latency, open_set, protocols, spinning, train_time
from tests.helpers import write_image_folder

ROW_FIELDS = {"backend", "precision", "device", "model", "input", "batch", "iters", "p50_ms", "p90_ms", "p99_ms",
              "images_per_s", "device_p50_ms", "device_p90_ms", "device_p99_ms", "device_images_per_s", "peak_fraction", "fused_over_bare", "floor_ms", "over_floor", "over_bf16_floor",
              "over_int8_floor", "status"}


@pytest.fixture(scope="module")
def quick_latency(tmp_path_factory) -> tuple[dict, Path, str]:
    """latency --quick on two CPU backends (one PyTorch, one ONNX Runtime), the rest skipped."""
    out = tmp_path_factory.mktemp("latency")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = latency.main(["--quick", "--out", str(out), "--backends", "torch-eager/*/cpu,onnxruntime-cpu/fp32/*"])
    return result, out, printed.getvalue()


def test_latency_writes_table_json_csv_and_plot(quick_latency) -> None:
    result, out, printed = quick_latency
    assert {p.name for p in out.iterdir()} >= {"results.json", "results.csv", "results.md", "latency.png"}
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "results.json").read_text())
    assert saved["model"] == "semobridge-tiny" and saved["encoder_gflop_per_image"] > 0
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert set(rows[0]) == ROW_FIELDS
    ran = {(r["backend"], r["precision"], r["model"], int(r["batch"])) for r in rows if r["status"] == "ok"}
    assert ran == {(b, "fp32", m, n) for b in ("torch-eager", "onnxruntime-cpu") for m in ("fused", "bare") for n in (1, 2)}
    fused = [r for r in saved["rows"] if r["model"] == "fused"]
    assert all(r["fused_over_bare"] > 0 for r in fused)
    floor = saved["cpu_floor"]
    assert {(p["rows"], p["k"], p["n"]) for p in floor["products"]} >= {(50, 64, 256), (50, 256, 64)}  # tiny's MLP at 50 tokens
    machine = floor["machine_floors_ms"]
    assert set(machine) == {"1", "2"} and all(ms > 0 for ms in machine["1"].values())
    for r in fused:  # on the CPU, % of peak = the encoder's FLOP rate over its products' rate in the case's floor
        assert r["floor_ms"] > 0 and r["over_floor"] == pytest.approx(r["p50_ms"] / r["floor_ms"])
        rate = floor["gflop_per_image"] * r["batch"] / r["floor_ms"]
        assert r["peak_fraction"] == pytest.approx(saved["encoder_gflop_per_image"] * r["images_per_s"] / rate / 1e3)
        assert r["over_bf16_floor"] == pytest.approx(r["p50_ms"] / min(ms for k, ms in machine[str(r["batch"])].items() if k.endswith("bf16")))
    assert "CPU floors: the encoder's own weight products" in printed and "Machine floors at batch 1" in printed
    for header in ("| backend | precision | device | input | batch | p50 ms | p90 ms | p99 ms | images/s", "fused/bare",
                   "## Skipped backends", "## Targets"):
        assert header in printed


def test_latency_lists_skipped_backends_with_reasons(quick_latency) -> None:
    result, _, printed = quick_latency
    reasons = {(s["backend"], s["precision"], s["device"]): s["reason"] for s in result["skipped"]}
    assert "not selected" in reasons[("onnxruntime-cpu", "int8", "cpu")]
    if not torch.cuda.is_available():
        assert reasons[("torch-cuda-graph", "fp16", "cuda")] == "no CUDA device"
        assert reasons[("tensorrt", "fp16", "cuda")] in ("no CUDA device", "tensorrt not installed")
    assert all(reason for reason in reasons.values())
    assert "| onnxruntime-cuda | fp16 | cuda |" in printed
    assert all(t["met"] is None for t in result["targets"])  # the targets are for ViT-B/16, not the tiny model


def test_cpu_targets_name_the_machine_floor() -> None:
    rows = [latency.Row("onnxruntime-cpu", p, "cpu", "fused", "224x224", 1, p50_ms=ms, floor_ms=floor)
            for p, ms, floor in (("int8", 120.0, 100.0), ("fp32", 130.0, 89.7))]
    found = {t["target"]: t for t in latency.targets(rows, "ViT-B-16", None, 2)}
    int8 = found["CPU (2 cores) ViT-B/16 fused int8, batch 1, 224x224: p50 <= 50 ms"]
    fp32 = found["CPU (2 cores) ViT-B/16 fused fp32, batch 1, 224x224: p50 <= 140 ms"]
    assert int8["met"] is False and "floor of 100 ms" in int8["note"]
    assert fp32["met"] is True and fp32["note"] == ""  # 90 ms floor, under the 140 ms target: no note
    # the same rows against their own floors: int8 120 ms over 100 ms, fp32 130 ms over 89.7 ms
    int8 = found["CPU ViT-B/16 fused int8, batch 1, 224x224: p50 <= 1.3 x its floor"]
    fp32 = found["CPU ViT-B/16 fused fp32, batch 1, 224x224: p50 <= 1.05 x its floor"]
    assert int8["met"] is True and int8["measured"].startswith("1.20 x")
    assert fp32["met"] is False and fp32["measured"].startswith("1.45 x")


def test_issue_21_targets_per_case_against_the_machine_floors() -> None:
    rows = [latency.Row("onnxruntime-cpu", "int8", "cpu", "fused", size, n, p50_ms=10.0 * n, over_bf16_floor=ratio,
                        over_int8_floor=2 * ratio) for size, n, ratio in (("224x224", 1, 1.4), ("480x640", 8, 1.6))]
    found = {t["target"]: t for t in latency.targets(rows, "ViT-B-16", None, 2, "AMD EPYC (x86_64: avx512_bf16)")}
    bf16 = [t for name, t in found.items() if "1.5 x the machine's bf16 floor" in name]
    assert [t["met"] for t in bf16] == [True, None, None, False]  # 224x224 x1, 224x224 x8, 480x640 x1, 480x640 x8
    assert bf16[0]["measured"] == "1.40 x (10.0 ms over 7.1 ms)" and bf16[1]["note"] == "not measured"
    assert bf16[0]["note"] == "set for a CPU with AMX; this CPU has none"
    amx = latency.targets(rows, "ViT-B-16", None, 2, "Intel Xeon (x86_64: amx_bf16 amx_int8)")
    assert all(t["note"] == "" for t in amx if "stretch" in t["target"] and t["met"] is not None)


def test_cpu_floor_is_the_sum_of_the_encoders_products(tiny_backbone, tiny_head, tmp_path, monkeypatch) -> None:
    from benchmarks.latency.floors import machine_floor
    from benchmarks.latency.measure import Settings, add_ratios, measure
    from benchmarks.latency.models import encoder_flops
    from semobridge_export.fused import FusedClassifier

    model, visual = FusedClassifier(tiny_head, tiny_backbone), tiny_backbone.model.visual
    tokens, patch = visual.positional_embedding.shape[0], visual.patch_size[0]
    assert tokens == (model.image_size // patch) ** 2 + 1  # the class token and the patches, read from the model
    width, layers = visual.transformer.width, visual.transformer.layers
    mlp = visual.transformer.resblocks[0].mlp.c_fc.out_features
    products = latency.encoder_products(model.encoder, model.image_size)
    expected = {
        (tokens - 1, 3 * patch * patch, width): 1,  # the patch embedding as its im2col product
        (tokens, width, 3 * width): layers,  # query, key and value: one product of the same input
        (tokens, width, width): layers, (tokens, width, mlp): layers, (tokens, mlp, width): layers,
        (1, width, visual.proj.shape[1]): 1}  # the projection of the class token
    assert {(p.rows, p.k, p.n): p.count for p in products} == expected
    attention_core = layers * 4 * tokens * tokens * width  # QK^T and AV, left out
    assert sum(p.flop() for p in products) + attention_core == encoder_flops(model)

    rates = {"torch": 40.0, "onnxruntime": 50.0, "openvino": 80.0}  # GFLOP/s: a fake library's fixed rate per call
    monkeypatch.setattr(latency.CpuFloors, "timer", lambda self, library, precision, p, batch:
                        lambda: 2.0 * batch * p.rows * p.k * p.n / rates[library] / 1e6)
    floors = latency.CpuFloors(products, tmp_path)

    class Fixed:  # a model that takes 9 ms
        def host(self, images):
            return lambda: 9.0

        def device(self, images):
            return None

    batch = 8
    row = latency.Row("onnxruntime-cpu", "int8", "cpu", "fused", "224x224", batch)
    measure([row], [Fixed()], latency.random_images(batch, (8, 8)), Settings(0, 3, 1.0), floors.case("onnxruntime", "int8", batch))
    flops = sum(count * 2.0 * batch * rows * k * n for (rows, k, n), count in expected.items())
    assert row.floor_ms == pytest.approx(flops / 50.0 / 1e6)
    machine = floors.machine((1, batch), 0, 3, 1.0)
    assert machine[batch]["torch bf16"] == pytest.approx(flops / 40.0 / 1e6)
    fastest = "openvino" if "openvino bf16" in machine[batch] else "torch"
    assert machine_floor(machine[batch], "bf16") == pytest.approx((flops / rates[fastest] / 1e6, fastest))
    add_ratios([row], encoder_flops(model), None, floors.gflop_per_image * 1e9, machine)
    assert row.over_bf16_floor == pytest.approx(9.0 / (flops / rates[fastest] / 1e6))
    assert row.over_floor == pytest.approx(9.0 / row.floor_ms)


def test_every_target_comes_from_the_table() -> None:
    names = [t["target"] for t in latency.targets([], "ViT-B-16", None, 2)]
    assert names == [t.name for t in latency.TARGETS if t.kind != "overhead"]  # no overhead rows without rows


def test_peak_table_and_sizes() -> None:
    from semobridge.errors import InputError
    from semobridge.validate import parse_hw

    assert latency.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert latency.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert latency.peak_tflops(None) is None and latency.peak_tflops("Some GPU") is None
    # HEIGHTxWIDTH, the one convention: a size copied from a benchmark into an export profile means the same frame
    assert latency.parse_sizes("224x224, 720x1280") == [("224x224", (224, 224)), ("720x1280", (720, 1280))]
    assert [hw for _, hw in latency.parse_sizes("480x640,1080x1920")] == [parse_hw("480x640"), parse_hw("1080x1920")]
    with pytest.raises(InputError, match="HEIGHTxWIDTH"):
        latency.parse_sizes("224x224,720")


def test_results_are_never_overwritten(tmp_path: Path, monkeypatch) -> None:
    from benchmarks import common

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    first = common.results_folder(None, "-x")
    first.mkdir()
    second = common.results_folder(None, "-x")
    assert second == first.with_name(first.name + "-2") and not second.exists()
    quick = common.results_folder(None, quick=True)
    assert quick.parent == tmp_path / "quick"
    (first / "results.md").write_text("committed")
    with pytest.raises(SystemExit, match="--force"):
        common.results_folder(first)
    assert common.results_folder(first, force=True) == first
    assert common.results_folder(tmp_path / "new") == tmp_path / "new"


HARNESS_ARGS = {"latency": ["--quick"], "preprocess": ["--quick"], "fit_time": ["--quick"], "train_time": ["--quick"],
                "protocols": ["--quick"], "classes": ["--quick"], "spinning": [], "accuracy": ["--root", "."],
                "open_set": ["--quick"], "video": ["--quick"], "jpeg": ["--quick"], "int8": ["--quick"],
                "cold_start": ["--quick"]}


@pytest.mark.parametrize("name", sorted(HARNESS_ARGS))
def test_every_harness_refuses_to_overwrite_results(name: str, tmp_path: Path) -> None:
    import importlib

    (tmp_path / "results.md").write_text("committed")
    with pytest.raises(SystemExit, match="--force"):
        importlib.import_module(f"benchmarks.{name}").main([*HARNESS_ARGS[name], "--out", str(tmp_path)])
    assert [p.name for p in tmp_path.iterdir()] == ["results.md"] and (tmp_path / "results.md").read_text() == "committed"


def test_quick_runs_write_under_results_quick(tmp_path: Path, monkeypatch) -> None:
    from benchmarks import common

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    for harness in (fit_time, train_time, protocols):
        assert harness.parse_args(["--quick"]).out.parent == tmp_path / "quick"
        assert harness.parse_args([]).out.parent == tmp_path


def test_spinning_times_one_session_per_setting(tmp_path: Path, capsys) -> None:
    result = spinning.main(["--model", "semobridge-tiny", "--blocks", "1", "--calls", "2", "--out", str(tmp_path)])
    assert [(r["sessions"], r["precision"]) for r in result["rows"]] == [
        ("alone", "fp32"), ("alone", "int8"), ("taking turns", "fp32"), ("taking turns", "int8")]
    for row in result["rows"]:
        assert row["calls"] == 2 and row["spinning_on_p50_ms"] > 0 and row["spinning_off_p50_ms"] > 0
        assert row["off_over_on"] == pytest.approx(row["spinning_off_p50_ms"] / row["spinning_on_p50_ms"])
    assert "| sessions | precision | calls each | spinning on p50 ms |" in capsys.readouterr().out
    assert json.loads((tmp_path / "spinning.json").read_text())["rows"] == json.loads(json.dumps(result["rows"]))


def test_fit_time_quick_compares_both_searches(tmp_path: Path, capsys) -> None:
    result = fit_time.main(["--quick", "--no-progress", "--devices", "cpu", "--tpe-trials", "20", "--trials", "64", "--steps", "3",
                            "--seeds", "0,1", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert [(r["classes"], r["shots"]) for r in result["rows"]] == [(10, 1), (10, 16)]
    for row in result["rows"]:
        assert row["tpe_trials"] == 20 and row["trials"] == 64 and row["train_steps"] == 3 and row["seeds"] == [0, 1]
        assert [r["seed"] for r in row["runs"]] == [0, 1]
        for name in ("ours", "tpe", "defaults"):
            for split in ("val", "test"):
                runs = [r[f"{name}_{split}_acc"] for r in row["runs"]]
                assert 0 <= min(runs) and max(runs) <= 1
                assert row[f"{name}_{split}_acc"] == pytest.approx(sum(runs) / 2)
        assert row["runs"][0]["test_images"] == 2000 and row["runs"][0]["val_images"] == 10 * row["val_per_class"]
        assert row["search_s"] > 0 and row["tpe_s"] > 0 and row["tpe_over_search_time"] == pytest.approx(row["tpe_s"] / row["search_s"])
        assert row["tpe_over_search_cpu"] == pytest.approx(row["tpe_cpu_s"] / row["search_cpu_s"])
        assert 100 < row["ours_peak_mb"] < 2048 and 100 < row["tpe_peak_mb"] < 2048  # the whole process, torch included
    assert "| device | C | K | seeds | our search s | TPE s | TPE time / ours | target >= 20x |" in printed
    assert json.loads((tmp_path / "fit_time.json").read_text())["rows"] == json.loads(json.dumps(result["rows"]))


def test_train_time_quick_counts_flops_and_checks_equivalence(tmp_path: Path, capsys) -> None:
    result = train_time.main(["--quick", "--check-steps", "5", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    (row,) = result["rows"]
    N, C, d, V = row["shot_rows"], row["classes"], train_time.WIDTH, row["val_rows"]
    products = train_time.step_products(N, C, d, d, V)
    assert len(products["autograd"]) == 20 and len(products["ours"]) == 17
    big = lambda ps: sum(1 for p in ps if N in p)  # noqa: E731  products over the N shot rows
    assert (big(products["autograd"]), big(products["ours"])) == (11, 8)
    assert row["gflop_ours"] < row["gflop_autograd"] and row["floor_s"] > 0 and row["ours_s"] > 0
    assert row["max_rel_loss_diff"] < 1e-4 and row["kept_step_ours"] == row["kept_step_autograd"]
    assert "floor s/step" in printed and "target min" in printed
    assert json.loads((tmp_path / "train_time.json").read_text())["rows"] == json.loads(json.dumps(result["rows"]))


def test_protocols_quick_trains_three_variants(tmp_path: Path, capsys) -> None:
    result = protocols.main(["--quick", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert [r["variant"] for r in result["rows"]] == list(protocols.VARIANTS)
    assert [r["val_per_class"] for r in result["rows"]] == [2, 2, 20]
    assert [r["updates"] for r in result["rows"]] == [29, 30, 30]
    assert all(0 <= r["test_acc_searched"] <= 1 for r in result["rows"])
    assert "paper - consistent (mean)" in printed and (tmp_path / "protocols.md").is_file()


def test_open_set_quick_compares_every_score_and_the_class_from_its_name(tmp_path: Path, capsys) -> None:
    result = open_set.main(["--quick", "--test", "20", "--out", str(tmp_path)])
    row = result["rows"][0]
    assert all(0 <= row[f"auroc_{n}"] <= 1 and 0 <= row[f"fpr95_{n}"] <= 1 for n in (*open_set.SCORES, "chosen"))
    assert row["auroc_chosen"] == row[f"auroc_{row['score']}"]
    assert 0 < row["threshold"] < 1 and row["temperature"] > 0 and 0 <= row["accepted_known"] <= 1
    assert {r["variant"] for r in result["name_alone"]} == set(open_set.NAME_VARIANTS)
    printed = capsys.readouterr().out
    assert "AUROC mcm" in printed and "AUROC chosen" in printed and "chosen minus MCM" in printed
    assert (tmp_path / "open_set.md").is_file()


def test_accuracy_on_a_paper_named_folder(tmp_path: Path, capsys) -> None:
    write_image_folder(tmp_path / "data" / "eurosat", {"train": 3, "val": 1, "test": 2}, classes=("Forest", "River", "Highway or Road"))
    (tmp_path / "data" / "my_photos").mkdir()  # not a paper dataset: ignored
    out = tmp_path / "out"
    result = accuracy.main(["--root", str(tmp_path / "data"), "--model", "semobridge-tiny", "--pretrained", "none", "--shots", "1",
                            "--seeds", "1", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    captured = capsys.readouterr()
    assert result["datasets"] == ["eurosat"] and result["meaningless"] is True
    assert "RANDOM WEIGHTS" in captured.err
    assert "| variant | source | 1 shot |" in captured.out
    assert "| SeMoBridge (training-free) | published (11 datasets, ViT-B/16) | 72.25 |" in captured.out
    assert "| zero-shot CLIP | published (11 datasets, ViT-B/16) | 65.52 |" in captured.out
    assert "MEANINGLESS" in captured.out
    saved = json.loads((out / "accuracy.json").read_text())
    assert {r["variant"] for r in saved["runs"]} == {"SeMoBridge (training-free)", "zero-shot CLIP"}
    assert saved["published"]["SeMoBridge-T"]["16"] == 82.20
    assert saved["protocol"] == "paper" and "protocol paper" in captured.out


def test_accuracy_without_paper_datasets_says_what_it_expects(tmp_path: Path) -> None:
    (tmp_path / "holiday").mkdir()
    with pytest.raises(SystemExit, match="eurosat"):
        accuracy.main(["--root", str(tmp_path), "--pretrained", "none"])


def test_classes_quick_reports_overhead_enrolment_and_refit(tmp_path: Path, capsys) -> None:
    result = classes.main(["--quick", "--batches", "1", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    (row,) = result["head_as_data"]
    assert row["batch"] == 1 and row["classes"] == 50
    assert row["data_over_baked"] == pytest.approx(row["data_p50_ms"] / row["baked_p50_ms"])
    enrol = result["enrolment"]
    assert enrol["classes"] == 50 and enrol["prompts"] == 7 and enrol["class_file_bytes"] > 50 * 3 * 64 * 4
    assert all(ms > 0 for ms in enrol["parts_ms"].values()) and enrol["add_class_ms"] > 0
    assert result["refit_export"]["classes"] == 51 and result["refit_export"]["total_s"] > 0
    c = result["c_library"]
    assert c["classes"] == c["fitted_classes"] == 50 and c["embedding_dim"] == 64
    assert c["set_classes_ms"] > 0 and c["set_over_fitted"] == pytest.approx(c["classify_set_ms"] / c["classify_fitted_ms"], rel=1e-3)
    for header in ("## Head as data", "| classes | batch | baked p50 ms | as data p50 ms |", "head maths, later edits",
                   "## The same change by re-fit + re-export", "## C library", "| sb_set_classes ms |"):
        assert header in printed
    assert json.loads((tmp_path / "classes.json").read_text())["enrolment"]["classes"] == 50


def test_preprocess_times_banded_and_dense_beside_the_floor(tmp_path: Path, capsys) -> None:
    from benchmarks import preprocess

    result = preprocess.main(["--quick", "--sizes", "120x160,480x640", "--out", str(tmp_path)])
    graphs = {"floor", "preprocess dense", "preprocess banded", "preprocess banded, Cast first", "fused fp32, dense",
              "fused fp32, banded", "fused fp32, banded, Cast first", "fused int8, dense", "fused int8, banded", "PIL resize"}
    assert {(r["graph"], r["input"]) for r in result["rows"]} == {(g, s) for g in graphs for s in ("120x160", "480x640")}
    for row in result["rows"]:
        assert row["p50_ms"] > 0 and row["over_floor"] > 0
        assert (row["dense_over_banded"] is not None) == ("banded" in row["graph"])
        assert (row["over_pil"] is not None) == row["graph"].startswith("fused")  # its call minus its call at S x S, over PIL
        assert (row["cast_first_over"] is not None) == (row["graph"] in ("preprocess banded", "fused fp32, banded"))
    goals = {t[0]: t for t in result["targets"]}
    assert goals["preprocess banded, 3024x4032: p50 <= 10 ms"][2] == "not measured"
    assert goals["fused fp32, banded, 3024x4032: preprocessing in the graph <= 0.5 x PIL's resize"][2] == "not measured"
    assert goals["preprocess banded, 480x640: no slower than dense"][2] in ("met", "NOT met")
    assert goals["fused int8, banded, 480x640: no slower than dense (within 2%)"][2] in ("met", "NOT met")
    assert goals["fused fp32, banded, 480x640: no slower than with the Cast first (within 2%)"][2] in ("met", "NOT met")
    assert "| graph | input | p50 ms | / floor | dense / banded | Cast first / this |" in capsys.readouterr().out
    assert json.loads((tmp_path / "preprocess.json").read_text())["rows"] == json.loads(json.dumps(result["rows"]))


def test_cold_start_times_each_backend_in_a_fresh_process(exported_onnx: Path, tmp_path: Path) -> None:
    from benchmarks import cold_start
    from semobridge_runtime.contract import openvino_int8_path

    result = cold_start.main(["--onnx", str(exported_onnx / "model.onnx"), "--rounds", "1", "--out", str(tmp_path)])
    expected = {"onnxruntime fp32", "onnxruntime int8"}
    if importlib.util.find_spec("openvino") is not None:
        expected |= {"openvino", "openvino, cache cold", "openvino, cache warm"}
        assert result["cache_mb"]["openvino"] > 0, "OpenVINO wrote no cache into the folder it was given"
        if openvino_int8_path(exported_onnx / "model.onnx").is_file():  # exported with nncf installed
            expected |= {"openvino int8", "openvino int8, cache cold", "openvino int8, cache warm"}
            assert "runs='int8'" in result["backends"]["openvino int8, cache warm"]
    assert set(result["cases"]) == expected
    for label, shown in result["backends"].items():  # each case ran the backend it is named after
        assert f"backend='{label.split()[0].rstrip(',')}'" in shown, (label, shown)
    assert "precision='int8'" in result["backends"]["onnxruntime int8"]
    assert "precision='fp32'" in result["backends"]["onnxruntime fp32"]
    for summary in result["cases"].values():
        assert summary["total_wall_s"] == pytest.approx(sum(summary[f"{p}_wall_s"] for p in cold_start.PHASES))
        assert 0 < summary["total_wall_s"] < summary["process_s"]
    assert "| onnxruntime int8 |" in (tmp_path / "cold_start.md").read_text()
    assert json.loads((tmp_path / "cold_start.json").read_text())["rounds"] == 1


def test_video_times_decode_and_classify_against_classify_alone(exported_onnx: Path, tmp_path: Path) -> None:
    pytest.importorskip("av", reason="benchmarks.video needs the runtime's video extra (PyAV): pip install './runtime[video]'")
    from benchmarks import video

    result = video.main(["--quick", "--onnx", str(exported_onnx / "model.onnx"), "--frames", "6", "--out", str(tmp_path)])
    rows = {r["case"]: r for r in result["rows"]}
    assert set(rows) == {"decode", "classify", "decode + classify", "stream --every 5"}
    assert all(r["frames_per_s"] > 0 and len(r["rounds"]) == 1 for r in rows.values())
    assert rows["classify"]["over_classify"] == 1.0
    assert "| decode + classify |" in (tmp_path / "video.md").read_text()
    assert json.loads((tmp_path / "video.json").read_text())["settings"]["frames"] == 6


def test_train_time_bf16_compares_precisions(tmp_path: Path, capsys) -> None:
    result = train_time.main(["--quick", "--bf16", "--check-steps", "3", "--no-progress", "--out", str(tmp_path)])
    row = result["rows"][0]
    assert row["fp32_s"] > 0 and row["bf16_s"] > 0 and row["check_steps"] == 3
    assert 0 <= row["max_rel_loss_diff"] < 1e-2 and row["kept_step_bf16"] >= 0
    assert "fp32 / bf16" in (tmp_path / "train_time_bf16.md").read_text() and "| 10 | 16 |" in capsys.readouterr().out


def test_jpeg_measures_the_fast_path_against_a_full_decode(tmp_path: Path) -> None:
    from benchmarks import jpeg

    result = jpeg.main(["--quick", "--photos", "1", "--iters", "1", "--out", str(tmp_path)])
    assert result["decoded_as"] == "480x640" and result["full_decode_resize_ms"] > 0 and result["draft_decode_resize_ms"] > 0
    assert 0 < result["max_grey_difference"] <= 6 and result["mean_grey_difference"] < 1  # a real, small difference
    assert result["entropy_floor_ms"] > 0 and result["speedup_bound"] == result["full_decode_resize_ms"] / result["entropy_floor_ms"]
    assert (tmp_path / "jpeg.md").is_file() and (tmp_path / "jpeg.json").is_file()


def test_int8_compares_static_with_dynamic_and_keeps_the_preprocessing_float(tmp_path: Path) -> None:
    from benchmarks import int8

    result = int8.main(["--quick", "--batches", "1", "--iters", "1", "--fit-images", "4", "--out", str(tmp_path)])
    quality = result["quality"]
    assert {"onnxruntime fp32", "onnxruntime int8 dynamic", "onnxruntime int8 static", "onnxruntime int8 static fused"} <= set(quality)
    for name in ("onnxruntime int8 static", "onnxruntime int8 static fused"):  # only the encoder is quantised
        assert quality[name]["max_grey_from_fp32_graph"] == 0.0 and quality[name]["max_grey_from_pil"] <= 1.001  # float rounding
        assert 0.99 < quality[name]["min_cosine"] < 1.0 and result["build_s"][name] > 0
    timed = {r["variant"]: r for r in result["rows"] if "p50_ms" in r}
    assert timed["onnxruntime int8 dynamic"]["x_dynamic_int8"] == 1.0
    assert all(r["floor_ms"] > 0 for r in result["rows"]) and result["cpu_flags"] == int8.cpu_flags()
    assert (tmp_path / "int8.md").read_text().count("| onnxruntime int8 static") == 4  # two tables, two static variants
    if "openvino int8 nncf" in quality:  # the export's static int8 IR (openvino and nncf installed)
        product = quality["openvino int8 nncf"]
        assert product["max_grey_from_pil"] <= 1.001 and 0.99 < product["min_cosine"] < 1.0
        assert result["build_s"]["openvino int8 nncf"] > 0 and timed["openvino int8 nncf"]["floor"] == "openvino int8"
