"""The two protocols around the method: the published code's order of operations, and ours.

The formulas are the same in both (docs/method.md); what differs is the order around them:

| | paper (the published code) | consistent |
|---|---|---|
| M1 prototypes P at test time | from the LAST training step (class bias included); the query side uses the kept W⁺ | from the kept state |
| M2 model selection | update, then evaluate: candidates are the states after 1 … N updates (strict >) | evaluate, then update: candidates are the states after 0 … N-1 updates |
| M3 validation | a given val split, whole | min(K, 4) images per class of it |
| M5 random resized crops | square (aspect ratio 1) | torchvision's 3/4 - 4/3 |

Both use the CuPL descriptions for the paper's datasets (M6: shipped in semobridge/cupl, all but
ImageNet's; a warning when the file is missing), and without a val split both hold out
min(K, 4) images per class of train. M3 sets apart the paper's datasets only: a val split of
your own data is always used whole (`whole_val`).
"""
from __future__ import annotations

from dataclasses import dataclass

from .datasets import DatasetSpec
from .errors import InputError


@dataclass(frozen=True)
class Protocol:
    """Switches of one protocol (see the module docstring)."""

    name: str
    prototypes_from_last_step: bool  # M1
    update_then_evaluate: bool  # M2
    whole_val_split: bool  # M3
    square_crops: bool  # M5


PAPER = Protocol("paper", True, True, True, True)
CONSISTENT = Protocol("consistent", False, False, False, False)
PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (PAPER, CONSISTENT)}


def get_protocol(name: str | Protocol | None, spec: DatasetSpec | None = None, train: bool = False) -> Protocol:
    """A protocol by name (None: `default_protocol(spec, train)`); a clear error for an unknown one."""
    if name is None:
        return default_protocol(spec, train)
    if isinstance(name, Protocol):
        return name
    if name not in PROTOCOLS:
        raise InputError(f"unknown protocol {name!r}", hint=f"choose one of: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def default_protocol(spec: DatasetSpec | None, train: bool) -> Protocol:
    """paper for the paper's eleven datasets and for SeMoBridge-T; consistent otherwise."""
    return PAPER if spec is not None or train else CONSISTENT


def whole_val(protocol: Protocol, spec: DatasetSpec | None) -> bool:
    """Use the whole val split: in the paper protocol, and always for data that is not one of the
    paper's datasets (its val split is the user's choice); the consistent protocol samples min(K, 4)
    per class of a paper dataset's val split."""
    return protocol.whole_val_split or spec is None
