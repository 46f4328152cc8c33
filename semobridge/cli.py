"""The `semobridge` command: fit, evaluate and predict, from images or from embeddings.

Heavy libraries (PyTorch, open_clip) load inside the commands that need them, so `--help`
and `info` answer at once.
"""
from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import click

from semobridge_runtime.commandline import group, model_argument, out_option, version_option

from . import __version__
from .errors import InputError
from .files import read_text
from .params import SEARCH_METHODS, BlendParams
from .validate import output_file

PARAMS_MAX_CHARS = 10_000


def parse_params(value: str | None) -> BlendParams | None:
    """--params: a JSON object, or the path of a JSON file holding one, with the seven blend keys."""
    if value is None:
        return None
    source = "--params"
    if len(value) <= PARAMS_MAX_CHARS and _is_file(value):
        source = f"--params file {value}"
        value = read_text(value, source)[: PARAMS_MAX_CHARS + 1]
    if len(value) > PARAMS_MAX_CHARS:
        raise InputError(f"{source} is over {PARAMS_MAX_CHARS:,} characters; it is a small JSON object")
    try:
        values = json.loads(value)
    except json.JSONDecodeError as exc:
        raise InputError(f"{source} is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}) and not a file",
                         hint='e.g. --params \'{"smoothness": 0.5, "alpha": 3, "beta": 2, "gamma": 4, '
                              '"lambda1": 0.5, "lambda2": 0.5, "lambda3": 0.5}\'') from None
    return BlendParams.from_dict(values, source)


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except OSError:  # e.g. a name too long for the file system: not a file
        return False


@contextlib.contextmanager
def json_log(path: str | None) -> Iterator:
    """A callback writing one JSON object per line; the file appears only if the run succeeds."""
    if path is None:
        yield None
        return
    from .files import atomic_output

    with atomic_output(Path(path), "--log-json file") as tmp, open(tmp, "w", encoding="utf-8") as f:
        yield lambda record: f.write(json.dumps(record) + "\n")


def report_random(pretrained: str) -> None:
    from .backbones import RANDOM, RANDOM_WARNING

    if pretrained == RANDOM:
        click.secho(RANDOM_WARNING, fg="red", bold=True, err=True)


def check_outputs(out: str, log_json: str | None) -> None:
    """Before any work: every file we will write can be written."""
    output_file(out, "model file (-o)")
    if log_json is not None:
        output_file(log_json, "--log-json file")


def source_options(export: bool = False) -> list:
    """What to fit on and how to describe it: `semobridge fit`, and `semobridge-export` (`export`: the bundled demo
    dataset and 8 shots by default, and --pretrained also names the weights of a --from-model)."""
    return [
        click.option("--data", required=not export, type=click.Path(exists=True),
                     help="Class folders, train/val/test folders, CoOp split or CSV"
                     + (" [default: the bundled demo dataset]." if export else ".")),
        click.option("--shots", required=not export, default=8 if export else None, show_default=export,
                     type=click.IntRange(min=1), help="Images per class to fit on (K)."),
        click.option("--model", default="ViT-B-16", show_default=True, help="open_clip model name or local-dir:PATH."),
        click.option("--pretrained", help="open_clip tag, checkpoint file, or 'none' (random weights, smoke tests) [default: openai"
                     + (", or as recorded in --from-model]." if export else "].")),
        click.option("--classnames", type=click.Path(exists=True, dir_okay=False), help="Class names, one per line, in folder order."),
        click.option("--dataset", "dataset_name", help="One of the paper's datasets (its prompts and augmentation); default: folder name."),
        click.option("--augment", type=click.IntRange(min=0),
                     help="Stored augmented copies per shot (1 = flip; N>1 = N random crops); default: the paper's."),
        click.option("--template", "templates", multiple=True, help="Prompt template with {} (repeatable); replaces the defaults."),
        click.option("--descriptions", type=click.Path(exists=True, dir_okay=False), help="CuPL-style JSON: class -> sentences."),
        click.option("--cupl-dir", type=click.Path(exists=True, file_okay=False), help="Folder with the paper's CuPL files [default: the package's]."),
        click.option("--cache-dir", type=click.Path(file_okay=False),
                     help="Cache embeddings in this folder (also $SEMOBRIDGE_CACHE) [default: no cache]."),
        click.option("--device", help="cpu or cuda [default: cuda when present]."),
    ]


fit_options = [
    click.option("--seed", default=1, show_default=True, help="Few-shot split, augmentation and training seed."),
    click.option("--params", help="Fixed blend hyper-parameters (JSON object or JSON file); skips the search."),
    click.option("--search-trials", type=click.IntRange(min=1),
                 help="Blend search budget on validation [default: 1024; tpe: 1000 trials]."),
    click.option("--search", type=click.Choice(SEARCH_METHODS), default=SEARCH_METHODS[0], show_default=True,
                 help="Blend search: ours, or tpe (the published 1,000 Optuna TPE trials; needs optuna)."),
    click.option("--train", is_flag=True, help="Train SeMoBridge-T (else training-free)."),
    click.option("--steps", default=5000, show_default=True, type=click.IntRange(min=1), help="SeMoBridge-T full-batch steps."),
    click.option("--csb/--no-csb", default=True, show_default=True, help="Class-specific bias (SeMoBridge-T)."),
    click.option(
        "--protocol", type=click.Choice(["paper", "consistent"]),
        help="paper: the published code's order (P from the last step, update-then-evaluate, whole val split, square "
        "crops); consistent: P from the kept step [default: paper for the paper's datasets and --train].",
    ),
    click.option("--log-json", type=click.Path(dir_okay=False), help="Write the training loss terms, one JSON line per step."),
]
output_option = out_option("Model file to write (.safetensors).", required=True)


def with_options(options):
    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def fit_with_options(*, data, shots, model, pretrained, classnames, dataset_name, augment, templates, descriptions, cupl_dir,
                     cache_dir, device, seed, params, search_trials, search, train, steps, csb, protocol, log=None):
    """`fit_dataset` as source_options() and fit_options (less --log-json, whose writer is `log`) ask: (head, backbone, split).
    `params` is the parsed BlendParams (parse_params, before any slow work)."""
    from .encode import EmbeddingCache
    from .pipeline import PromptOptions, fit_dataset

    return fit_dataset(
        data, shots, model=model, pretrained=pretrained or "openai", seed=seed, train=train, steps=steps, csb=csb,
        params=params, search_trials=search_trials, search=search, augment=augment, dataset_name=dataset_name,
        class_names_file=classnames, prompts=PromptOptions(templates or None, descriptions, cupl_dir),
        cache=EmbeddingCache(cache_dir), device=device, log=log, protocol=protocol,
    )


@group("semobridge")
@version_option(__version__)
def main() -> None:
    """Few-shot CLIP classification with SeMoBridge (ICLR 2026)."""


@main.command("fit")
@with_options(source_options())
@with_options(fit_options)
@output_option
def fit_cmd(out, log_json, **options) -> None:
    """Fit on K images per class of a dataset and save the model file."""
    check_outputs(out, log_json)
    options["params"] = parse_params(options["params"])
    with json_log(log_json) as log:
        head, backbone, _ = fit_with_options(**options, log=log)
        head.save(out)
    click.echo(head.info.describe())
    click.echo(f"wrote {out}")
    report_random(backbone.pretrained)


@main.command("eval")
@model_argument("model_file", metavar="MODEL")
@click.option("--data", required=True, type=click.Path(exists=True), help="The dataset the model was fitted on (its test split by default).")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test"]), help="Split to evaluate on.")
@click.option("--pretrained", help="Where to find the backbone weights now (tag or file) [default: as recorded].")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Cache embeddings in this folder (also $SEMOBRIDGE_CACHE) [default: no cache].")
@click.option("--device", help="cpu or cuda [default: cuda when present].")
@click.option("--ood-of", type=click.Choice(["imagenet"]),
              help="DATA is a variant of this dataset (ImageNet-V2, -Sketch, -A, -R) with its classes or a subset, "
              "named by index, WordNet id or class name; plain class folders are evaluated whole.")
@click.option("--open-set", is_flag=True,
              help="Also leave-classes-out: each half of the classes in turn plays the unknown (AUROC, FPR at 95% TPR, "
              "accuracy on known classes at the operating point; MCM beside).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write every figure to this JSON file.")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), help="Write the per-class figures to this CSV file.")
@click.option("--confusion", "confusion_out", type=click.Path(dir_okay=False), help="Plot the confusion matrix to this PNG.")
def eval_cmd(model_file, data, split, pretrained, cache_dir, device, ood_of, open_set, json_out, csv_out, confusion_out) -> None:
    """Top-1 accuracy of a fitted model, with zero-shot CLIP beside it; per-class accuracy, macro-F1, the confusion
    matrix and, with --open-set, how well it tells its classes from others."""
    for path, what in ((json_out, "--json file"), (csv_out, "--csv file"), (confusion_out, "--confusion PNG")):
        if path is not None:
            output_file(path, what)
    from .backbones import load_backbone
    from .encode import EmbeddingCache
    from .model import SeMoBridge
    from .modelfile import percent
    from .pipeline import evaluate

    head = SeMoBridge.load(model_file)
    cache = EmbeddingCache(cache_dir)
    b = head.info.backbone
    backbone = load_backbone(b["name"], pretrained or b["pretrained"], device=device)
    result = evaluate(head, backbone, data, split, cache, ood_of=ood_of, open_set=open_set)
    click.echo(f"{'':14}{'top-1':>9}")
    click.echo(f"{'SeMoBridge':14}{percent(result['accuracy']):>9}")
    click.echo(f"{'zero-shot CLIP':14}{percent(result['zero_shot_accuracy']):>9}")
    click.echo(f"({result['images']} {result['split']} images, {result['classes']}, {head.info.variant}, {head.info.shots} shots)")
    click.echo(describe_evaluation(result))
    write_evaluation(result, json_out, csv_out, confusion_out)
    report_random(backbone.pretrained)


def describe_evaluation(result: dict) -> str:
    """Macro-F1, the operating point, the per-class table, the confusion matrix and the open-set figures, as text."""
    from semobridge_runtime.evaluation import confusion_table

    from .modelfile import percent

    names = result["class_names"]
    lines = [f"macro-F1 {percent(result['macro_f1'])}"]
    if "accepted" in result:
        lines.append(f"at the operating point: {percent(result['accepted'])} of the images accepted, "
                     f"{percent(result['accuracy_at_operating_point'])} right (refused counts as wrong)")
    lines += ["", f"{'class':<24}{'images':>7}{'accuracy':>11}{'F1':>11}"]
    lines += [f"{r['class'][:23]:<24}{r['images']:>7}{percent(r['accuracy']):>11}{percent(r['f1']):>11}" for r in result["per_class"]]
    lines += ["", "closed-set confusion matrix (rows: true class, columns: predicted)", confusion_table(result, names)]
    o = result.get("open_set")
    if o:
        lines += ["", "open set, leave-classes-out (each half of the classes in turn unknown; mean of the two folds):",
                  f"{'':24}{'AUROC':>9}{'FPR@95TPR':>11}",
                  f"{'top probability':<24}{percent(o['auroc']):>9}{percent(o['fpr_at_95_tpr']):>11}",
                  f"{'MCM (zero-shot)':<24}{percent(o['mcm_auroc']):>9}{percent(o['mcm_fpr_at_95_tpr']):>11}",
                  f"{'chosen: ' + o['score']:<24}{percent(o['chosen_auroc']):>9}{percent(o['chosen_fpr_at_95_tpr']):>11}",
                  f"known-class accuracy at the operating point: {percent(o['known_accuracy_at_operating_point'])}"
                  + (f" (threshold {o['threshold']:.4f}, {percent(o['known_accepted'])} of known images accepted)"
                     if o["threshold"] is not None else " (the model has no threshold: closed-set)")]
    return "\n".join(lines)


def write_evaluation(result: dict, json_out: str | None, csv_out: str | None, confusion_out: str | None) -> None:
    """--json, --csv and --confusion, each written atomically."""
    from semobridge_runtime.evaluation import per_class_csv

    from .files import atomic_output

    if json_out:
        with atomic_output(Path(json_out), "--json file") as tmp:
            tmp.write_text(json.dumps(result, indent=2))
        click.echo(f"wrote {json_out}")
    if csv_out:
        with atomic_output(Path(csv_out), "--csv file") as tmp:
            tmp.write_text(per_class_csv(result))
        click.echo(f"wrote {csv_out}")
    if confusion_out:
        plot_confusion(result, Path(confusion_out))
        click.echo(f"wrote {confusion_out}")


def plot_confusion(result: dict, path: Path) -> None:
    """The confusion matrix as a PNG (rows normalised to the class's images; needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("--confusion needs matplotlib", hint="pip install matplotlib, or leave out --confusion") from None
    import numpy as np

    from .files import atomic_output

    m = np.asarray(result["confusion"], np.float64)
    share = m / np.maximum(m.sum(1, keepdims=True), 1)
    names = result["class_names"]
    size = 2 + 0.35 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true class")
    ax.set_title(f"top-1 {100 * result['accuracy']:.2f} %, macro-F1 {100 * result['macro_f1']:.2f} %")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the class's images")
    fig.tight_layout()
    with atomic_output(path, "--confusion PNG") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


@main.command("fit-features")
@click.argument("features", type=click.Path(exists=True, dir_okay=False))
@click.option("--model", help="open_clip model the features come from (recorded, so that the model can be exported).")
@click.option("--pretrained", help="Its weights: open_clip tag, checkpoint file, or 'none' (needs --model).")
@click.option("--device", help="cpu or cuda [default: cuda when present].")
@with_options(fit_options)
@output_option
def fit_features_cmd(features, model, pretrained, device, seed, params, search_trials, search, train, steps, csb, protocol, log_json,
                     out) -> None:
    """Fit from CLIP embeddings you already have (FEATURES.npz)."""
    if pretrained is not None and model is None:
        raise InputError("--pretrained needs --model (the open_clip model the features come from)")
    check_outputs(out, log_json)
    params = parse_params(params)
    from .backbones import best_device
    from .features import FeatureSet
    from .fit import fit_features, features_info

    feats = FeatureSet.load(features)
    backbone = None
    if model is not None:
        from .backbones import load_backbone

        backbone = load_backbone(model, pretrained or "openai", device="cpu")
        feats.check_backbone(backbone, features)
    info = features_info(feats, backbone)
    if not feats.has_val and params is None:
        click.echo("no val_image in FEATURES.npz: using the default blend hyper-parameters (no search)", err=True)
    with json_log(log_json) as log:
        head = fit_features(feats, info, params=params, search_trials=search_trials, search=search, train=train,
                            steps=steps, csb=csb, seed=seed, log=log, device=device or best_device(), protocol=protocol)
        head.save(out)
    click.echo(head.info.describe())
    click.echo(f"wrote {out}")
    if backbone is not None:
        report_random(backbone.pretrained)


@main.command("predict-features")
@model_argument("model_file", metavar="MODEL")
@click.argument("queries", type=click.Path(exists=True, dir_okay=False))
@out_option("SCORES.npy to write.", required=True)
def predict_features_cmd(model_file, queries, out) -> None:
    """Blend scores z [Nq, C] for query embeddings (QUERIES.npz, key `image`)."""
    output_file(out, "scores file (-o)")
    import numpy as np
    import torch

    from .features import load_queries
    from .files import atomic_output
    from .model import SeMoBridge

    head = SeMoBridge.load(model_file)
    q = load_queries(queries, head.text_classifier.shape[1])
    with torch.no_grad():
        scores = head(q).numpy().astype(np.float32)
    with atomic_output(Path(out), "scores file (-o)") as tmp, open(tmp, "wb") as f:
        np.save(f, scores)
    click.echo(f"wrote {out} {scores.shape}")


@main.command("info")
@model_argument("model_file", metavar="MODEL")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded metadata as JSON.")
def info_cmd(model_file, as_json) -> None:
    """What a model file (.safetensors) or an exported graph (.onnx) records."""
    from .modelfile import describe_export, read_export_metadata, read_info

    if Path(model_file).suffix.lower() == ".onnx":
        meta = read_export_metadata(model_file)
        click.echo(meta.to_json(indent=2) if as_json else describe_export(meta))
        return
    info = read_info(model_file)
    click.echo(json.dumps(asdict(info), indent=2) if as_json else info.describe())


if __name__ == "__main__":
    sys.exit(main())
