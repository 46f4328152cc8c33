"""The `semobridge` command: fit, evaluate and predict, from images or from embeddings."""
from __future__ import annotations

import contextlib
import functools
import json
import sys
from pathlib import Path
from typing import Iterator

import click
import numpy as np
import torch

from . import __version__
from .backbones import RANDOM, RANDOM_WARNING, BackboneError, best_device, load_backbone
from .blend import BlendParams
from .data import DataError
from .encode import EmbeddingCache
from .features import FeatureError, FeatureSet
from .files import atomic_output
from .model import ModelFileError, ModelInfo, SeMoBridge

USER_ERRORS = (DataError, FeatureError, ModelFileError, BackboneError, ValueError, FileNotFoundError)


def user_errors(fn):
    """Turn the library's input errors into one clear line and exit code 1, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


def parse_params(value: str | None) -> BlendParams | None:
    """--params: a JSON object or the path of a JSON file with the seven blend keys."""
    if value is None:
        return None
    text = Path(value).read_text() if Path(value).is_file() else value
    try:
        return BlendParams.from_dict(json.loads(text))
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON and not a file: {value!r} ({exc})", param_hint="--params") from exc


@contextlib.contextmanager
def json_log(path: str | None) -> Iterator:
    """A callback writing one JSON object per line; the file appears only if the run succeeds."""
    if path is None:
        yield None
        return
    with atomic_output(Path(path)) as tmp, open(tmp, "w") as f:
        yield lambda record: f.write(json.dumps(record) + "\n")


def report_random(pretrained: str) -> None:
    if pretrained == RANDOM:
        click.secho(RANDOM_WARNING, fg="red", bold=True, err=True)


def describe(head: SeMoBridge) -> str:
    i = head.info
    acc = f"{i.val_accuracy:.4f} ({i.val_source})" if i.val_accuracy is not None else f"n/a ({i.val_source})"
    trained = f", kept step {i.kept_step} of {i.steps}" if i.kept_step is not None else ""
    return (
        f"{i.variant} SeMoBridge, {len(i.class_names)} classes, {i.shots} shots, backbone {i.backbone['name']} "
        f"({i.backbone['pretrained']})\nprotocol: {i.protocol or 'unrecorded'}{trained}\n"
        f"blend: {json.dumps({k: round(v, 4) for k, v in i.params.items()})}\nval accuracy: {acc}"
    )


fit_options = [
    click.option("--seed", default=1, show_default=True, help="Few-shot split, augmentation and training seed."),
    click.option("--params", help="Fixed blend hyper-parameters (JSON or JSON file); skips the search."),
    click.option(
        "--search-trials", type=int, help="Blend candidates evaluated on validation [default: 8192, fewer for large sets]."
    ),
    click.option("--train", is_flag=True, help="Train SeMoBridge-T (else training-free)."),
    click.option("--steps", default=5000, show_default=True, help="SeMoBridge-T full-batch steps."),
    click.option("--csb/--no-csb", default=True, show_default=True, help="Class-specific bias (SeMoBridge-T)."),
    click.option(
        "--protocol", type=click.Choice(["paper", "consistent"]),
        help="paper: the published code's order (P from the last step, update-then-evaluate, whole val split, square "
        "crops); consistent: P from the kept step [default: paper for the paper's datasets and --train].",
    ),
    click.option("--log-json", type=click.Path(dir_okay=False), help="Write the training loss terms, one JSON line per step."),
    click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Model file to write (.safetensors)."),
]


def with_options(options):
    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


@click.group()
@click.version_option(__version__)
def main() -> None:
    """Few-shot CLIP classification with SeMoBridge (ICLR 2026)."""


@main.command("fit")
@click.option("--data", required=True, type=click.Path(exists=True), help="Class folders, train/val/test folders, CoOp split or CSV.")
@click.option("--shots", required=True, type=int, help="Images per class to fit on (K).")
@click.option("--model", default="ViT-B-16", show_default=True, help="open_clip model name or local-dir:PATH.")
@click.option("--pretrained", default="openai", show_default=True, help="open_clip tag, checkpoint file, or 'none' (random).")
@click.option("--classnames", type=click.Path(exists=True, dir_okay=False), help="Class names, one per line, in folder order.")
@click.option("--dataset", "dataset_name", help="One of the paper's datasets (its prompts and augmentation); default: folder name.")
@click.option("--augment", type=int, help="Stored augmented copies per shot (1 = flip; N>1 = N random crops); default: the paper's.")
@click.option("--template", "templates", multiple=True, help="Prompt template with {} (repeatable); replaces the defaults.")
@click.option("--descriptions", type=click.Path(exists=True, dir_okay=False), help="CuPL-style JSON: class -> sentences.")
@click.option("--cupl-dir", type=click.Path(exists=True, file_okay=False), help="Folder with the paper's CuPL files [default: the package's].")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Embedding cache [default: ~/.cache/semobridge].")
@click.option("--device", help="cpu or cuda [default: cuda when present].")
@with_options(fit_options)
@user_errors
def fit_cmd(data, shots, model, pretrained, classnames, dataset_name, augment, templates, descriptions, cupl_dir, cache_dir, device,
            seed, params, search_trials, train, steps, csb, protocol, log_json, output) -> None:
    """Fit on K images per class of a dataset and save the model file."""
    from .pipeline import PromptOptions, fit_dataset

    with json_log(log_json) as log:
        head, backbone = fit_dataset(
            data, shots, model=model, pretrained=pretrained, seed=seed, train=train, steps=steps, csb=csb,
            params=parse_params(params), search_trials=search_trials, augment=augment, dataset_name=dataset_name, class_names_file=classnames,
            prompts=PromptOptions(templates or None, descriptions, cupl_dir), cache=EmbeddingCache(cache_dir),
            device=device, log=log, protocol=protocol,
        )
        head.save(output)
    click.echo(describe(head))
    click.echo(f"wrote {output}")
    report_random(backbone.pretrained)


@main.command("eval")
@click.argument("model_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--data", required=True, type=click.Path(exists=True))
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test"]))
@click.option("--pretrained", help="Where to find the backbone weights now (tag or file) [default: as recorded].")
@click.option("--cache-dir", type=click.Path(file_okay=False))
@click.option("--device")
@click.option("--ood-of", type=click.Choice(["imagenet"]),
              help="DATA is a variant of this dataset (ImageNet-V2, -Sketch, -A, -R) with its classes or a subset, "
              "named by index, WordNet id or class name; plain class folders are evaluated whole.")
@user_errors
def eval_cmd(model_file, data, split, pretrained, cache_dir, device, ood_of) -> None:
    """Top-1 accuracy of a fitted model, with zero-shot CLIP beside it."""
    from .pipeline import evaluate

    head = SeMoBridge.load(model_file)
    b = head.info.backbone
    backbone = load_backbone(b["name"], pretrained or b["pretrained"], device=device)
    result = evaluate(head, backbone, data, split, EmbeddingCache(cache_dir), ood_of=ood_of)
    click.echo(f"{'':14}{'top-1':>8}")
    click.echo(f"{'SeMoBridge':14}{100 * result['accuracy']:8.2f}")
    click.echo(f"{'zero-shot CLIP':14}{100 * result['zero_shot_accuracy']:8.2f}")
    click.echo(f"({result['images']} {result['split']} images, {result['classes']}, {head.info.variant}, {head.info.shots} shots)")
    report_random(backbone.pretrained)


@main.command("fit-features")
@click.argument("features", type=click.Path(exists=True, dir_okay=False))
@click.option("--device", help="cpu or cuda [default: cuda when present].")
@with_options(fit_options)
@user_errors
def fit_features_cmd(features, device, seed, params, search_trials, train, steps, csb, protocol, log_json, output) -> None:
    """Fit from CLIP embeddings you already have (FEATURES.npz)."""
    from .fit import fit_features

    feats = FeatureSet.load(features)
    info = ModelInfo(
        class_names=feats.class_names,
        backbone={"name": "unknown (fit-features)", "pretrained": "unknown", "weights_hash": "unknown"},
        image_size=0, mean=[], std=[], params=BlendParams().to_dict(), shots=round(feats.shots),
        val_source="val split" if feats.has_val else "none",
    )
    if not feats.has_val and params is None:
        click.echo("no val_image in FEATURES.npz: using the default blend hyper-parameters (no search)", err=True)
    with json_log(log_json) as log:
        head = fit_features(feats, info, params=parse_params(params), search_trials=search_trials, train=train,
                            steps=steps, csb=csb, seed=seed, log=log, device=device or best_device(), protocol=protocol)
        head.save(output)
    click.echo(describe(head))
    click.echo(f"wrote {output}")


@main.command("predict-features")
@click.argument("model_file", type=click.Path(exists=True, dir_okay=False))
@click.argument("queries", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="SCORES.npy to write.")
@user_errors
def predict_features_cmd(model_file, queries, output) -> None:
    """Blend scores z [Nq, C] for query embeddings (QUERIES.npz, key `image`)."""
    head = SeMoBridge.load(model_file)
    with np.load(queries, allow_pickle=False) as z:
        if "image" not in z.files:
            raise FeatureError(f"{queries} has no key 'image' (query embeddings [Nq, d])")
        q = torch.from_numpy(np.asarray(z["image"], dtype=np.float32))
    d = head.text_classifier.shape[1]
    if q.ndim != 2 or q.shape[1] != d:
        raise FeatureError(f"{queries}: 'image' has shape {tuple(q.shape)}, expected [Nq, {d}] for this model")
    if not torch.isfinite(q).all():
        raise FeatureError(f"{queries}: 'image' has NaN or inf values")
    with torch.no_grad():
        scores = head(q).numpy().astype(np.float32)
    with atomic_output(Path(output)) as tmp, open(tmp, "wb") as f:
        np.save(f, scores)
    click.echo(f"wrote {output} {scores.shape}")


@main.command("info")
@click.argument("model_file", type=click.Path(exists=True, dir_okay=False))
@user_errors
def info_cmd(model_file) -> None:
    """Print what a model file records."""
    head = SeMoBridge.load(model_file)
    click.echo(describe(head))
    click.echo(json.dumps(head.info.__dict__, indent=2))


if __name__ == "__main__":
    sys.exit(main())
