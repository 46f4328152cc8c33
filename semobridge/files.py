"""Files: the runtime's one bounded reader and one atomic writer (semobridge_runtime.files), for the library.

atomic_output: a failure leaves nothing half-written behind, only a regular writable file is replaced, and it
keeps its mode. open_regular / read_bytes / read_text: regular files only, never blocking, size capped per kind
before reading. file_sha256: content hashes (the embedding cache, the export manifest, the TensorRT cache key).
"""
from __future__ import annotations

from semobridge_runtime.files import (ARRAY_BYTES, CSV_BYTES, GRAPH_BYTES, IMAGE_BYTES, MODEL_BYTES, TEXT_BYTES,
                                      atomic_output, check_regular, file_sha256, open_regular, read_bytes, read_text)

__all__ = ["ARRAY_BYTES", "CSV_BYTES", "GRAPH_BYTES", "IMAGE_BYTES", "MODEL_BYTES", "TEXT_BYTES", "atomic_output",
           "check_regular", "file_sha256", "open_regular", "read_bytes", "read_text"]
