"""Open-set scores compared: which score tells images of enrolled classes from the others.

Leave-classes-out splits: of C classes of the benchmarks' synthetic CLIP-like embeddings
(benchmarks/common.py), the first half is enrolled (K shots each, min(K, 4) validation
embeddings each, as the fit samples them) and the second half plays the unknown; `--test`
test embeddings per class of both halves. The training-free head is fitted on the known half
with the default blend; its temperature and threshold are calibrated by semobridge.calibrate on
the validation and leave-one-out shot embeddings only. Compared, on the test embeddings:

- max_probability: the top class's calibrated probability max softmax(z / T) (the runtime's score);
- max_blend: the top blend score max z;
- margin: the top-1 minus top-2 blend score;
- prototype_cosine: the nearest image prototype's cosine max n(q) · I_c;
- mcm: Maximum Concept Matching (Ming et al., 2022), max softmax(n(q) · T_c / tau), tau = 1;
- chosen: the one of max_probability and mcm that the fit chose by leave-one-class-out on its own held-out
  images (semobridge_runtime.openset.choose_score), per split and seed.

A second table measures the class enrolled from its name alone (semobridge_runtime.head.stand_in_prototypes:
P_c and I_c from T_c moved by the class set's mean offsets) against the text prototype only (P_c = T_c,
I_c = 0) and against the same class enrolled with 1 and with 4 shots (the other classes: 4 shots each),
on the first three classes in turn: that class's recall and the accuracy over all classes.

Reported: AUROC (known vs unknown), FPR at 95 % TPR, which score the fit chose (the fraction of seeds
choosing MCM), and for the chosen score at the calibrated threshold the acceptance of held-out known
images (target: --accept; mean and per-seed standard deviation), the fraction of unknown images accepted
and the accuracy on the accepted known images. Random embeddings:
the figures compare scores on data with a known structure, not what CLIP reaches on photos.

    python -m benchmarks.open_set                 # C 10, 40, 200; K 1, 4, 16; seeds 0-9
    python -m benchmarks.open_set --quick         # CI-sized
    python -m benchmarks.open_set --cost model.onnx   # what the decision and probabilities add to a prediction
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python benchmarks/open_set.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from benchmarks.common import add_out_options, info_for, machine, markdown_table, parse_ints, results_folder, synthetic_features, write_report
from semobridge.blend import BlendParams
from semobridge.calibrate import calibrate
from semobridge.data import VAL_SHOTS_MAX
from semobridge.features import FeatureSet
from semobridge.fit import build_head
from semobridge.model import SeMoBridge
from semobridge.prototypes import class_kl
from semobridge_runtime import head as np_head
from semobridge_runtime import contract, openset

SCORES = ("max_probability", "max_blend", "margin", "prototype_cosine", "mcm")
SYNTHETIC_BACKBONE = {"name": "synthetic", "pretrained": "none", "weights_hash": "0"}


def known_half(pool: FeatureSet, known: int, val: int) -> FeatureSet:
    """The first `known` classes: their prompts, shots and first `val` validation embeddings each."""
    text = pool.text_class < known
    shots = pool.shot_label < known
    rank = torch.zeros_like(pool.val_label)
    for c in range(known):
        where = pool.val_label == c
        rank[where] = torch.arange(int(where.sum()))
    v = (pool.val_label < known) & (rank < val)
    return FeatureSet(pool.text_projection, pool.text_eos[text], pool.text_class[text], pool.shot_image[shots],
                      pool.shot_label[shots], pool.val_image[v], pool.val_label[v], pool.logit_scale, pool.class_names[:known])


@torch.no_grad()
def scores_of(head, temperature: float, q: torch.Tensor) -> dict[str, np.ndarray]:
    z = head(q)
    top2 = z.topk(min(2, z.shape[1]), dim=1).values
    return {
        "max_probability": openset.abstention_score(openset.probabilities(z.numpy(), temperature)),
        "max_blend": top2[:, 0].numpy(),
        "margin": (top2[:, 0] - top2[:, -1]).numpy(),
        "prototype_cosine": (F.normalize(q, dim=-1) @ head.image_prototypes.T).max(1).values.numpy(),
        "mcm": openset.mcm(head.zero_shot(q).numpy()),
    }


def run(classes: int, shots: int, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    known = classes // 2
    pool = synthetic_features(classes, shots, VAL_SHOTS_MAX + args.test, args.width, args.width, seed=seed)
    features = known_half(pool, known, min(shots, VAL_SHOTS_MAX))
    head = build_head(features, info_for(features, SYNTHETIC_BACKBONE)).with_params(BlendParams())
    cal = calibrate(head, features, args.accept)
    rank = torch.zeros_like(pool.val_label)
    for c in range(classes):
        where = pool.val_label == c
        rank[where] = torch.arange(int(where.sum()))
    test = rank >= VAL_SHOTS_MAX
    q, y = pool.val_image[test], pool.val_label[test]
    is_known = (y < known).numpy()
    s = scores_of(head, cal.open_set.temperature, q)
    s["chosen"] = s[cal.open_set.score]
    row: dict[str, Any] = {"classes": classes, "known": known, "shots": shots, "seed": seed, "score": cal.open_set.score,
                           "loco": cal.loco, "temperature": cal.open_set.temperature, "threshold": cal.open_set.threshold,
                           "ece_before": cal.ece_before, "ece_after": cal.ece_after, "calibration_images": cal.images}
    for name in (*SCORES, "chosen"):
        row[f"auroc_{name}"] = openset.auroc(s[name][is_known], s[name][~is_known])
        row[f"fpr95_{name}"] = openset.fpr_at_tpr(s[name][is_known], s[name][~is_known])
    accepted = s["chosen"] >= cal.open_set.threshold
    pred = head(q).argmax(1).numpy()
    row["accepted_known"] = float(accepted[is_known].mean())
    row["accepted_unknown"] = float(accepted[~is_known].mean())
    row["closed_set_accuracy"] = float((pred[is_known] == y.numpy()[is_known]).mean())
    ok = accepted & is_known
    row["accuracy_accepted_known"] = float((pred[ok] == y.numpy()[ok]).mean()) if ok.any() else float("nan")
    return row


NAME_VARIANTS = ("name alone (stand-in)", "text prototype only", "1 shot", "4 shots")


@torch.no_grad()
def name_alone(classes: int, seed: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Recall of one class and overall accuracy, per way of enrolling that class (NAME_VARIANTS)."""
    pool = synthetic_features(classes, 4, args.test, args.width, args.width, seed=seed)
    full = build_head(pool, info_for(pool, SYNTHETIC_BACKBONE))
    rows = []
    for c in range(3):
        others = torch.arange(classes) != c
        for variant in NAME_VARIANTS:
            if variant.endswith("shot") or variant.endswith("shots"):
                k = int(variant.split()[0])
                keep = torch.cat([torch.nonzero(pool.shot_label == j).flatten()[:k if j == c else 4] for j in range(classes)])
                f = FeatureSet(pool.text_projection, pool.text_eos, pool.text_class, pool.shot_image[keep], pool.shot_label[keep],
                               None, None, pool.logit_scale, pool.class_names)
                h = build_head(f, info_for(f, SYNTHETIC_BACKBONE))
            else:
                T, P, I = (x.clone() for x in (full.text_classifier, full.bridged_prototypes, full.image_prototypes))
                if variant.startswith("name"):
                    p, i = np_head.stand_in_prototypes(T[c].numpy(), T[others].numpy(), P[others].numpy(), I[others].numpy())
                    P[c], I[c] = torch.from_numpy(p), torch.from_numpy(i)
                else:
                    P[c], I[c] = T[c], 0
                h = SeMoBridge(full.bridge, T, P, I, class_kl(I, T), full.info)
            pred = h.with_params(BlendParams())(pool.val_image).argmax(1)
            mine = pool.val_label == c
            rows.append({"classes": classes, "seed": seed, "class": c, "variant": variant,
                         "recall": float((pred[mine] == c).float().mean()),
                         "accuracy": float((pred == pool.val_label).float().mean())})
    return rows


def summary(rows: list[dict[str, Any]]) -> list[list[Any]]:
    out = []
    for c, k in sorted({(r["classes"], r["shots"]) for r in rows}):
        mine = [r for r in rows if (r["classes"], r["shots"]) == (c, k)]
        mean = lambda key: statistics.fmean(r[key] for r in mine)  # noqa: E731
        spread = statistics.stdev([r["accepted_known"] for r in mine]) if len(mine) > 1 else float("nan")
        out.append([c // 2, c - c // 2, k, f"{mean('calibration_images'):.0f}",
                    *(f"{100 * mean(f'auroc_{n}'):.1f}" for n in (*SCORES, "chosen")),
                    f"{sum(r['score'] == 'mcm' for r in mine)}/{len(mine)}",
                    *(f"{100 * mean(f'fpr95_{n}'):.1f}" for n in ("max_probability", "mcm", "chosen")),
                    f"{100 * mean('accepted_known'):.1f} ± {100 * spread:.1f}", f"{100 * mean('accepted_unknown'):.1f}",
                    f"{100 * mean('closed_set_accuracy'):.1f}", f"{100 * mean('accuracy_accepted_known'):.1f}",
                    f"{100 * mean('ece_before'):.1f} -> {100 * mean('ece_after'):.1f}"])
    return out


def report(rows: list[dict[str, Any]], names: list[dict[str, Any]], args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    headers = ["known C", "unknown C", "K", "held-out n", *(f"AUROC {n}" for n in (*SCORES, "chosen")), "mcm chosen (seeds)",
               "FPR95 max_probability", "FPR95 mcm", "FPR95 chosen",
               f"known accepted (target {100 * args.accept:.0f}; mean ± sd over seeds)", "unknown accepted", "closed-set acc",
               "acc on accepted known", "ECE % before -> after"]
    splits = sorted({(r["classes"], r["shots"]) for r in rows})
    per_split = {key: [r for r in rows if (r["classes"], r["shots"]) == key] for key in splits}
    split_mean = lambda key, name: statistics.fmean(r[name] for r in per_split[key])  # noqa: E731
    worst = {n: min(split_mean(key, f"auroc_{n}") - split_mean(key, "auroc_mcm") for key in splits) for n in (*SCORES, "chosen")
             if n != "mcm"}
    worst_seed = min(r["auroc_chosen"] - r["auroc_mcm"] for r in rows)
    miss = max(splits, key=lambda key: abs(split_mean(key, "accepted_known") - args.accept))
    miss_seed = max(abs(r["accepted_known"] - args.accept) for r in rows)
    text = "\n".join([
        f"# Open-set scores on synthetic leave-classes-out splits (d = {args.width}, default blend)", "",
        f"Known half enrolled, other half unknown; {args.test} test embeddings per class; seeds "
        f"{', '.join(map(str, args.seeds))} (means shown, %). Threshold and temperature from the validation and "
        "leave-one-out shot embeddings only. Random embeddings: these compare scores, they are not accuracy on photos.", "",
        markdown_table(headers, summary(rows)), "",
        "Worst per-split mean AUROC minus MCM's (points): " + ", ".join(f"{n} {100 * v:+.1f}" for n, v in worst.items())
        + f"; worst single seed, chosen minus MCM: {100 * worst_seed:+.1f}.",
        f"Largest per-split distance of the mean known acceptance from its target: "
        f"{100 * abs(split_mean(miss, 'accepted_known') - args.accept):.1f} points ({miss[0] // 2} known classes, {miss[1]} shots); "
        f"largest single seed: {100 * miss_seed:.1f} points.",
        f"Targets: chosen AUROC >= MCM's on every split: {'met' if worst['chosen'] >= 0 else 'not met'}; mean acceptance "
        f"within 2 points of {100 * args.accept:.0f} % on every split: "
        f"{'met' if abs(split_mean(miss, 'accepted_known') - args.accept) <= 0.02 else 'not met'} (one model's acceptance "
        f"varies by about sqrt(a (1 - a) / (n + 2)) for n held-out images; below n = 19 the threshold is a normal-theory "
        f"prediction bound on log(s - 1/C): docs/method.md, \"The open set\").",
    ])
    text += "\n\n" + "\n".join([
        "## A class from its name alone", "",
        f"Each of the first three classes in turn, enrolled four ways, the other classes with 4 shots each; mean over "
        f"classes and seeds of that class's recall and of the accuracy over all classes ({args.test} test embeddings per class, %).", "",
        markdown_table(["C", *(f"{v}: recall / acc" for v in NAME_VARIANTS)], [
            [c, *(f"{100 * statistics.fmean(r['recall'] for r in names if r['classes'] == c and r['variant'] == v):.1f} / "
                  f"{100 * statistics.fmean(r['accuracy'] for r in names if r['classes'] == c and r['variant'] == v):.1f}"
                  for v in NAME_VARIANTS)] for c in sorted({r["classes"] for r in names})]),
    ])
    result = {"benchmark": "open_set", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
              "args": {k: v for k, v in vars(args).items() if k != "out"}, "rows": rows, "name_alone": names}
    return result, text


def without_decision(model: Path, out: Path) -> Path:
    """A copy of an exported graph as exported before it computed the open-set decision: no temperature and threshold
    inputs (their initializers stay, as constants nothing reads), no probabilities and known outputs, nor in the
    metadata's output list; everything else as it was."""
    import json

    import onnx

    proto = onnx.load(str(model))
    for field, names in ((proto.graph.output, contract.DECISION_OUTPUTS), (proto.graph.input, contract.DECISION_INPUTS)):
        kept = [value for value in field if value.name not in names]
        del field[:]
        field.extend(kept)
    for prop in proto.metadata_props:
        if prop.key == "semobridge":
            meta = json.loads(prop.value)
            meta["outputs"] = [o for o in meta.get("outputs", []) if o["name"] not in contract.DECISION_OUTPUTS]
            prop.value = json.dumps(meta)
    onnx.save(proto, str(out))
    return out


def decision_cost(model: Path, batch: int = 8, repeats: int = 200) -> dict[str, Any]:
    """What the graph's open-set decision adds to a prediction: the fastest ONNX Runtime run (CPU, one thread) of the
    decision's own nodes (onnx.utils.Extractor: scores, the text cosines, temperature, threshold, mcm_weight ->
    probabilities, known, open_set_score, both scores computed whatever the weight) against
    the fastest run of the whole graph on `batch` random 224x224 images, alternating in one loop, less the fastest run
    of a graph that only copies the scores (ONNX Runtime's own cost per run, which the decision inside the whole graph
    does not pay); with the model's classes and with 1000 random classes. (Timing the whole graph with and without the decision against each other
    cannot resolve a difference this small on a shared machine: it moved by +-30 % between runs.)"""
    import tempfile

    import onnx.helper
    import onnx.utils

    from semobridge_runtime.backends.session import SessionSettings, open_session

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, 224, 224, 3), np.uint8)
    settings = SessionSettings(("CPUExecutionProvider",), 1)  # one core each: steadier on a shared machine
    cosines = _mcm_input(model)
    with tempfile.TemporaryDirectory() as tmp:
        part = Path(tmp) / "decision.onnx"
        cut = onnx.utils.Extractor(onnx.load(str(model))).extract_model(["scores", cosines, *contract.DECISION_INPUTS],
                                                                        list(contract.DECISION_OUTPUTS))
        onnx.save(cut, str(part))  # (onnx.utils.extract_model's shape inference pulls the image's Shape nodes in)
        decision = open_session(part, settings, "decision part")
    copy = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["scores"], ["copy"])], "copy",
        [onnx.helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, ["N", "C"])],
        [onnx.helper.make_tensor_value_info("copy", onnx.TensorProto.FLOAT, ["N", "C"])]), opset_imports=[onnx.helper.make_opsetid("", 18)])
    overhead = open_session(copy.SerializeToString(), settings, "copy graph")
    whole = open_session(model, settings)
    d = int(next(i for i in whole.get_overridable_initializers() if i.name == "text_classifier").shape[1])
    unit = [F.normalize(torch.from_numpy(rng.normal(size=(1000, d)).astype(np.float32)), dim=-1).numpy() for _ in range(3)]
    wide = {**dict(zip(("text_classifier", "bridged_prototypes", "image_prototypes"), unit)),
            "class_kl": rng.random(1000).astype(np.float32)}
    calibration = {"temperature": np.array(0.2, np.float32), "threshold": np.array(0.5, np.float32),
                   contract.MCM_WEIGHT: np.array(1.0, np.float32)}
    outputs = ["scores", "label", "embedding", *contract.DECISION_OUTPUTS]
    result: dict[str, Any] = {"model": str(model), "batch": batch, "repeats": repeats, "machine": machine()}
    for case, classes in (("fitted classes", {}), ("1000 classes", wide)):
        times: dict[str, list[float]] = {"whole": [], "decision": [], "overhead": []}
        for _ in range(repeats):
            t0 = time.perf_counter()
            scores = whole.run(outputs, {"image": images, **classes, **calibration})[0]
            t1 = time.perf_counter()
            decision.run(None, {"scores": scores, cosines: scores, **calibration})  # values of the cosines' shape
            t2 = time.perf_counter()
            overhead.run(None, {"scores": scores})
            times["whole"].append(t1 - t0)
            times["decision"].append(t2 - t1)
            times["overhead"].append(time.perf_counter() - t2)
        whole_ms, decision_ms, overhead_ms = (1e3 * min(times[n]) for n in ("whole", "decision", "overhead"))
        net = max(decision_ms - overhead_ms, 0.0)  # the fastest runs: least disturbed by other load
        result[case] = {"classes": int(scores.shape[1]), "whole_ms": whole_ms, "decision_ms": net,
                        "run_overhead_ms": overhead_ms, "ratio_over_today": net / (whole_ms - net)}
    return result


def _mcm_input(model: Path) -> str:
    """The graph's tensor of the text cosines n(q)·T_c [N, C] that MCM's softmax reads (export/fused.py): the input
    of the Softmax nearest open_set_score but the probabilities' (before its division by openset.MCM_TAU, where one is left)."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    made = {out: node for node in graph.node for out in node.output}
    todo = [contract.OPEN_SET_SCORE]
    while todo:  # breadth first, never past a Softmax: the encoder's attention has them too
        node = made.get(todo.pop(0))
        if node is None or contract.PROBABILITIES in node.output:
            continue
        if node.op_type == "Softmax":
            name = node.input[0]
            return made[name].input[0] if name in made and made[name].op_type == "Div" else name
        todo += list(node.input)
    raise ValueError(f"{model} has no MCM softmax before '{contract.OPEN_SET_SCORE}': re-export it")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=parse_ints, default=None, help="total classes, half known (default 10,40,200; --quick: 10)")
    p.add_argument("--shots", type=parse_ints, default=None, help="shots (default 1,4,16; --quick: 4)")
    p.add_argument("--seeds", type=parse_ints, default=None, help="seeds (default 0-9; --quick: 0)")
    p.add_argument("--width", type=int, default=256, help="d_t = d of the synthetic embeddings (default 256)")
    p.add_argument("--test", type=int, default=100, help="test embeddings per class (default 100)")
    p.add_argument("--accept", type=float, default=openset.ACCEPT, help="target acceptance of known images (default 0.95)")
    add_out_options(p, "-open-set", quick=True)
    p.add_argument("--quick", action="store_true", help="CI-sized")
    p.add_argument("--cost", type=Path, default=None, metavar="MODEL",
                   help="only measure what the decision adds to Classifier.predict on this exported model")
    args = p.parse_args(argv)
    args.classes = args.classes or ((10,) if args.quick else (10, 40, 200))
    args.shots = args.shots or ((4,) if args.quick else (1, 4, 16))
    args.seeds = args.seeds or ((0,) if args.quick else tuple(range(10)))
    args.out = results_folder(args.out, "-open-set", quick=args.quick, force=args.force)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every split; print the table; write open_set.json and open_set.md."""
    args = parse_args(argv)
    if args.cost is not None:
        result = decision_cost(args.cost)
        text = (f"# The open-set decision's cost\n\n{result['model']}, batch {result['batch']}, ONNX Runtime on the CPU "
                f"(1 thread), fastest of {result['repeats']} runs of the whole graph and of the decision's nodes alone (less ONNX "
                f"Runtime's cost per run), "
                f"alternating ({result['machine'].get('cpu', '')}):\n\n"
                + markdown_table(["class set", "classes", "whole graph (ms)", "decision (ms)", "cost over the rest"],
                                 [[case, r["classes"], f"{r['whole_ms']:.2f}", f"{r['decision_ms']:.4f}",
                                   f"{100 * r['ratio_over_today']:.3f} %"]
                                  for case, r in result.items() if isinstance(r, dict) and "whole_ms" in r]))
        write_report(args.out, "open_set_cost", result, text)
        print(text)
        return result
    cases = [(c, k, s) for c in args.classes for k in args.shots for s in args.seeds]
    rows = [run(c, k, s, args) for c, k, s in tqdm(cases, desc="open set", file=sys.stderr)]
    names = [r for c in args.classes for s in args.seeds for r in name_alone(c, s, args)]
    result, text = report(rows, names, args)
    write_report(args.out, "open_set", result, text)
    print(text)
    return result


if __name__ == "__main__":
    main()
