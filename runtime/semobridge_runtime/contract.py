"""The fused graph's interface, checked at load: one image input, `scores`/`label`/`embedding` outputs.

A graph that carries semobridge metadata but whose tensors do not match it (edited by hand,
exported by another tool, metadata copied from another model) is refused here with a
ModelError, instead of failing inside the inference library at the first predict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .errors import ModelError
from .metadata import ModelInfo

_REEXPORT = "re-export the model with semobridge-export (its metadata must describe this graph)"


@dataclass(frozen=True)
class Tensor:
    """A graph input or output as a backend reports it."""

    name: str
    dtype: str  # numpy's name: "uint8", "float32", "int64", ...
    shape: tuple[int | None, ...]  # None: dynamic


def check_graph(info: ModelInfo, inputs: Sequence[Tensor], outputs: Sequence[Tensor], source: str,
                classes: int | None = None) -> None:
    """Raise ModelError unless the graph's tensors are the ones `info` (the metadata) describes; `classes`: the
    number of classes the graph scores with its own class set, when the backend could measure it."""
    size = info.image_size
    want_input = (Tensor(info.input_name, "uint8", (None, None, None, 3)) if info.input_kind == "uint8"
                  else Tensor(info.input_name, "float32", (None, 3, size, size)))
    if len(inputs) != 1:
        raise ModelError(f"{source}: the graph has {len(inputs)} inputs {[t.name for t in inputs]}, "
                         f"expected one ({_describe(want_input)})", hint=_REEXPORT)
    _check(inputs[0], want_input, "input", source)
    found = {t.name: t for t in outputs}
    for want in (Tensor("scores", "float32", (None, info.num_classes)), Tensor("label", "int64", (None,)),
                 Tensor("embedding", "float32", (None, info.embedding_dim))):
        if want.name not in found:
            raise ModelError(f"{source}: the graph has no '{want.name}' output (it has {sorted(found)}); "
                             f"a semobridge model outputs scores, label and embedding", hint=_REEXPORT)
        _check(found[want.name], want, "output", source)
    if classes is not None and classes != info.num_classes:
        raise ModelError(f"{source}: the graph holds {classes} classes but its metadata names {info.num_classes}",
                         hint=_REEXPORT)


def _check(got: Tensor, want: Tensor, role: str, source: str) -> None:
    """Same dtype and rank, and equal dims wherever both are static (the input's name is not checked)."""
    fits = got.dtype == want.dtype and len(got.shape) == len(want.shape) and all(
        g is None or w is None or g == w for g, w in zip(got.shape, want.shape))
    if not fits:
        raise ModelError(f"{source}: {role} '{got.name}' is {_describe(got)} but the metadata describes "
                         f"{_describe(want)}", hint=_REEXPORT)


def _describe(tensor: Tensor) -> str:
    dims = ", ".join("?" if d is None else str(d) for d in tensor.shape)
    return f"{tensor.dtype} [{dims}]"
