"""One dynamic batch of requests -> one response (or one error) per request.

Each request is checked on its own, so a bad request fails alone with an input error while the
others in its batch are classified. A request over the per-request budget (its pixels, or its encoded
files plus the pixels their headers declare) is refused before anything of it is decoded or run (over
HTTP the gate has refused it before Triton; over gRPC Triton has already read it). Encoded images of all requests are decoded in parallel
(Pillow releases the GIL), then every valid image goes through one `Classifier.predict`, which
runs same-size images together.
"""

from __future__ import annotations

import io
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..classifier import Classifier
from ..contract import OPEN_SET_SCORE
from ..errors import InputError, SemobridgeError
from ..images import decode_image
from ..inputs import uint8_groups
from .admission import MIB, TooLarge
from .protocol import ENCODED, IMAGE


@dataclass(frozen=True)
class Request:
    """The tensors of one request (Triton has checked their dtypes and that `image` has 3 channels)."""

    image: np.ndarray | None  # uint8 [B, H, W, 3]
    encoded: np.ndarray | None  # object [B, 1] of bytes


Result = dict[str, np.ndarray] | SemobridgeError


def run_batch(classifier: Classifier, requests: list[Request], pool: ThreadPoolExecutor,
              budget: int | None = None) -> list[Result]:
    """Outputs per request (protocol.OUTPUTS: an unknown image has label -1 and an empty class_name), or the error
    that request alone gets.
    `budget`: the bytes a request may carry (None: no bound)."""
    started = [_start(request, classifier, pool, budget) for request in requests]
    images = [_finish(pending, classifier) for pending in started]
    valid = [i for i, item in enumerate(images) if not isinstance(item, SemobridgeError)]
    flat = [image for i in valid for image in images[i]]
    results: list[Result] = list(images)
    if not flat:
        return results
    try:
        prediction = classifier.predict(flat, top_k=1)
    except SemobridgeError as exc:  # the backend failed: every request of the run gets the error
        return [exc if i in valid else results[i] for i in range(len(requests))]
    names = np.array([(name or "").encode() for name in prediction.class_names], dtype=object)  # None: unknown
    start = 0
    for i in valid:
        rows = slice(start, start + len(images[i]))
        start = rows.stop
        results[i] = {"scores": prediction.scores[rows], "label": prediction.labels[rows, None],
                      "embedding": prediction.embeddings[rows], "probabilities": prediction.probabilities[rows],
                      "known": prediction.known[rows, None], OPEN_SET_SCORE: prediction.open_set_score[rows, None],
                      "class_name": names[rows, None]}
    return results


def _start(request: Request, classifier: Classifier, pool: ThreadPoolExecutor,
           budget: int | None) -> list[np.ndarray | Future] | InputError:
    """The request's images, or futures decoding them; an error for a request that has no usable input or
    carries more than the budget."""
    if (request.image is None) == (request.encoded is None):
        return InputError(f"a request carries exactly one of the inputs '{IMAGE}' (uint8 [B,H,W,3] pixels) or "
                          f"'{ENCODED}' (BYTES [B,1] encoded images), not "
                          + ("both" if request.image is not None else "neither"))
    if request.image is not None:
        if budget is not None and request.image.nbytes > budget:
            return _too_large(request.image.nbytes, budget)
        return [request.image]  # one [B, H, W, 3] batch
    blobs = [bytes(blob) for blob in request.encoded.reshape(-1)]
    if budget is not None:
        size = sum(len(blob) + _declared_pixel_bytes(blob) for blob in blobs)
        if size > budget:
            return _too_large(size, budget)
    limits = classifier.limits
    return [pool.submit(decode_image, blob, limits, f"encoded image {i}") for i, blob in enumerate(blobs)]


def _declared_pixel_bytes(blob: bytes) -> int:
    """The RGB bytes an encoded image's header declares (0 if it has none: decoding will say why)."""
    try:
        with Image.open(io.BytesIO(blob)) as img:  # the header only
            return img.width * img.height * 3
    except Exception:  # noqa: BLE001  (any undecodable file: decode_image reports it)
        return 0


def _too_large(size: int, budget: int) -> TooLarge:
    return TooLarge(f"the request carries {size} bytes of images (decoded), over the {budget // MIB} MiB a request "
                    "may carry (--max-request-mb)",
                    hint="send fewer or smaller images per request, or start the server with a larger --max-request-mb")


def _finish(pending: list[np.ndarray | Future] | InputError, classifier: Classifier) -> list[np.ndarray] | SemobridgeError:
    """The request's decoded, checked images: empty images, sizes beyond the limits and undecodable files refused."""
    if isinstance(pending, SemobridgeError):
        return pending
    try:
        if len(pending) == 1 and isinstance(pending[0], np.ndarray):  # an `image` batch: checked without a copy
            uint8_groups(pending[0], classifier.fixed_size, classifier.limits)
            return list(pending[0])
        images = [item.result() for item in pending]
        uint8_groups(images, classifier.fixed_size, classifier.limits)  # raises for this request alone
        return images
    except SemobridgeError as exc:
        return exc
