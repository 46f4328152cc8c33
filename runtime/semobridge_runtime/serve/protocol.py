"""What server and client agree on: the served model's tensors, its config parameters, and errors on the wire.

A request carries one of two inputs: `image`, uint8 [B, H, W, 3] RGB pixels (B images of one size), or
`encoded`, BYTES [B, 1] (JPEG, PNG, ... files, decoded on the server). The outputs are the fused
graph's `scores` [B, C], `label` [B, 1] (-1: unknown), `embedding` [B, d], `probabilities` [B, C], `known`
BOOL [B, 1] and `open_set_score` [B, 1] (the open-set decision the graph computes: `known` is open_set_score, the
model's chosen abstention score, >= the threshold), and `class_name` BYTES [B, 1] (empty for unknown).
A Triton repository of `semobridge-export --formats triton` serves the graph itself: the same outputs but
`class_name`, its `label` the argmax whatever `known` says (RemoteClassifier gives -1 for both servers).
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..contract import METADATA_KEY, RUN_OUTPUTS
from ..errors import ERROR_TABLE, ModelError, SemobridgeError
from ..contract import DECISION_OUTPUTS

MODEL_NAME = "semobridge"
IMAGE, ENCODED = "image", "encoded"
OUTPUTS = (*RUN_OUTPUTS, *DECISION_OUTPUTS, "class_name")
LABELS_FILE = "labels.txt"  # one class name per line, for Triton's classification extension on `scores`

METADATA = METADATA_KEY  # config parameter: the model's metadata JSON, with the limits in force
SETTINGS = "semobridge_serve"  # config parameter: how each model instance loads the model (ServeSettings)

_KINDS = {row.kind: row.python for row in ERROR_TABLE}
_HINT = "; hint: "
_REQUEST_ID = re.compile(r"^\[request id: [^\]]*\]\s*")


def error_text(exc: SemobridgeError) -> str:
    """An error as one line for a Triton error response: '<kind>: <message>[; hint: <hint>]'."""
    message = " ".join(str(exc).splitlines())
    return f"{exc.kind}: {message}" + (f"{_HINT}{exc.hint}" if exc.hint else "")


def error_from_text(text: str, default: type[SemobridgeError]) -> SemobridgeError:
    """The inverse of error_text; Triton's own messages (no kind) become `default`."""
    text = _REQUEST_ID.sub("", text.strip())
    kind, sep, rest = text.partition(": ")
    cls = _KINDS.get(kind) if sep else None
    message, _, hint = (rest if cls else text).partition(_HINT)
    return (cls or default)(message, hint=hint or None)


def parameter(config: dict[str, Any], key: str) -> Any:
    """A JSON config parameter of the served model (as Triton's model-config endpoint returns it)."""
    try:
        return json.loads(config["parameters"][key]["string_value"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"the served model's config has no valid '{key}' parameter ({exc!r})",
                         hint="serve the model with semobridge-serve (or the config of semobridge-export --formats triton)"
                         ) from None
