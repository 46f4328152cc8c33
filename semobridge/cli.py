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

from .clitools import command, version_option
from .errors import InputError
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
        try:
            value = Path(value).read_text(encoding="utf-8")[: PARAMS_MAX_CHARS + 1]
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read {source}: {exc}") from None
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


def check_outputs(output: str, log_json: str | None) -> None:
    """Before any work: every file we will write can be written."""
    output_file(output, "model file (-o)")
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
output_option = click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Model file to write (.safetensors).")


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


@click.group()
@version_option
def main() -> None:
    """Few-shot CLIP classification with SeMoBridge (ICLR 2026)."""


@main.command("fit")
@with_options(source_options())
@with_options(fit_options)
@output_option
@command
def fit_cmd(output, log_json, **options) -> None:
    """Fit on K images per class of a dataset and save the model file."""
    check_outputs(output, log_json)
    options["params"] = parse_params(options["params"])
    with json_log(log_json) as log:
        head, backbone, _ = fit_with_options(**options, log=log)
        head.save(output)
    click.echo(head.info.describe())
    click.echo(f"wrote {output}")
    report_random(backbone.pretrained)


@main.command("eval")
@click.argument("model_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--data", required=True, type=click.Path(exists=True), help="The dataset the model was fitted on (its test split by default).")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test"]), help="Split to evaluate on.")
@click.option("--pretrained", help="Where to find the backbone weights now (tag or file) [default: as recorded].")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Cache embeddings in this folder (also $SEMOBRIDGE_CACHE) [default: no cache].")
@click.option("--device", help="cpu or cuda [default: cuda when present].")
@click.option("--ood-of", type=click.Choice(["imagenet"]),
              help="DATA is a variant of this dataset (ImageNet-V2, -Sketch, -A, -R) with its classes or a subset, "
              "named by index, WordNet id or class name; plain class folders are evaluated whole.")
@command
def eval_cmd(model_file, data, split, pretrained, cache_dir, device, ood_of) -> None:
    """Top-1 accuracy of a fitted model, with zero-shot CLIP beside it."""
    from .backbones import load_backbone
    from .encode import EmbeddingCache
    from .model import SeMoBridge
    from .modelfile import percent
    from .pipeline import evaluate

    head = SeMoBridge.load(model_file)
    cache = EmbeddingCache(cache_dir)
    b = head.info.backbone
    backbone = load_backbone(b["name"], pretrained or b["pretrained"], device=device)
    result = evaluate(head, backbone, data, split, cache, ood_of=ood_of)
    click.echo(f"{'':14}{'top-1':>9}")
    click.echo(f"{'SeMoBridge':14}{percent(result['accuracy']):>9}")
    click.echo(f"{'zero-shot CLIP':14}{percent(result['zero_shot_accuracy']):>9}")
    click.echo(f"({result['images']} {result['split']} images, {result['classes']}, {head.info.variant}, {head.info.shots} shots)")
    report_random(backbone.pretrained)


@main.command("fit-features")
@click.argument("features", type=click.Path(exists=True, dir_okay=False))
@click.option("--model", help="open_clip model the features come from (recorded, so that the model can be exported).")
@click.option("--pretrained", help="Its weights: open_clip tag, checkpoint file, or 'none' (needs --model).")
@click.option("--device", help="cpu or cuda [default: cuda when present].")
@with_options(fit_options)
@output_option
@command
def fit_features_cmd(features, model, pretrained, device, seed, params, search_trials, search, train, steps, csb, protocol, log_json,
                     output) -> None:
    """Fit from CLIP embeddings you already have (FEATURES.npz)."""
    if pretrained is not None and model is None:
        raise InputError("--pretrained needs --model (the open_clip model the features come from)")
    check_outputs(output, log_json)
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
        head.save(output)
    click.echo(head.info.describe())
    click.echo(f"wrote {output}")
    if backbone is not None:
        report_random(backbone.pretrained)


@main.command("predict-features")
@click.argument("model_file", type=click.Path(exists=True, dir_okay=False))
@click.argument("queries", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="SCORES.npy to write.")
@command
def predict_features_cmd(model_file, queries, output) -> None:
    """Blend scores z [Nq, C] for query embeddings (QUERIES.npz, key `image`)."""
    output_file(output, "scores file (-o)")
    import numpy as np
    import torch

    from .features import load_queries
    from .files import atomic_output
    from .model import SeMoBridge

    head = SeMoBridge.load(model_file)
    q = load_queries(queries, head.text_classifier.shape[1])
    with torch.no_grad():
        scores = head(q).numpy().astype(np.float32)
    with atomic_output(Path(output), "scores file (-o)") as tmp, open(tmp, "wb") as f:
        np.save(f, scores)
    click.echo(f"wrote {output} {scores.shape}")


@main.command("info")
@click.argument("model_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the recorded metadata as JSON.")
@command
def info_cmd(model_file, as_json) -> None:
    """What a model file (.safetensors) or an exported graph (.onnx) records."""
    from .modelfile import describe_export, read_export_metadata, read_info

    if Path(model_file).suffix.lower() == ".onnx":
        meta = read_export_metadata(model_file)
        click.echo(json.dumps(meta, indent=2) if as_json else describe_export(meta))
        return
    info = read_info(model_file)
    click.echo(json.dumps(asdict(info), indent=2) if as_json else info.describe())


if __name__ == "__main__":
    sys.exit(main())
