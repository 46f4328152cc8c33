"""One dynamic batch of requests -> one response (or one error) per request.

Each request is checked on its own, so a bad request fails alone with an input error while the
others in its batch are classified; encoded images of all requests are decoded in parallel
(Pillow releases the GIL), then every valid image goes through one `Classifier.predict`, which
runs same-size images together.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..classifier import Classifier
from ..errors import InputError, SemobridgeError
from ..images import decode_image
from ..inputs import uint8_groups
from .protocol import ENCODED, IMAGE


@dataclass(frozen=True)
class Request:
    """The tensors of one request (Triton has checked their dtypes and that `image` has 3 channels)."""

    image: np.ndarray | None  # uint8 [B, H, W, 3]
    encoded: np.ndarray | None  # object [B, 1] of bytes


Result = dict[str, np.ndarray] | SemobridgeError


def run_batch(classifier: Classifier, requests: list[Request], pool: ThreadPoolExecutor) -> list[Result]:
    """Outputs per request (scores, label, embedding, class_name), or the error that request alone gets."""
    started = [_start(request, classifier, pool) for request in requests]
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
    names = np.array([name.encode() for name in prediction.class_names], dtype=object)
    start = 0
    for i in valid:
        rows = slice(start, start + len(images[i]))
        start = rows.stop
        results[i] = {"scores": prediction.scores[rows], "label": prediction.labels[rows, None],
                      "embedding": prediction.embeddings[rows], "class_name": names[rows, None]}
    return results


def _start(request: Request, classifier: Classifier, pool: ThreadPoolExecutor) -> list[np.ndarray | Future] | InputError:
    """The request's images, or futures decoding them; an error for a request that has no usable input."""
    if (request.image is None) == (request.encoded is None):
        return InputError(f"a request carries exactly one of the inputs '{IMAGE}' (uint8 [B,H,W,3] pixels) or "
                          f"'{ENCODED}' (BYTES [B,1] encoded images), not "
                          + ("both" if request.image is not None else "neither"))
    if request.image is not None:
        return [request.image]  # one [B, H, W, 3] batch
    limits = classifier.limits
    return [pool.submit(decode_image, bytes(blob), limits, f"encoded image {i}")
            for i, blob in enumerate(request.encoded.reshape(-1))]


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
