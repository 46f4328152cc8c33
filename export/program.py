"""The fused classifier as a torch.export program (`.pt2`), for servers that run PyTorch."""
from __future__ import annotations

import io
import os
from pathlib import Path
import torch
from semobridge_runtime.contract import METADATA_KEY
from semobridge_runtime.metadata import ModelInfo
from torch.export import ExportedProgram

from semobridge.files import atomic_output

EXTRA_FILE = f"{METADATA_KEY}.json"


def save_program(program: ExportedProgram, path: str | os.PathLike, meta: ModelInfo) -> Path:
    """Write the program atomically, with the metadata JSON inside as an extra file."""
    path = Path(path)
    buffer = io.BytesIO()  # torch.export.save wants a .pt2 name or a buffer; the temporary file has neither
    torch.export.save(program, buffer, extra_files={EXTRA_FILE: meta.to_json()})
    with atomic_output(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return path


def load_program(path: str | os.PathLike) -> tuple[torch.nn.Module, ModelInfo]:
    """The callable module (image -> scores, label, embedding) and its metadata."""
    extra = {EXTRA_FILE: ""}
    program = torch.export.load(str(path), extra_files=extra)
    return program.module(), ModelInfo.from_json(extra[EXTRA_FILE] or None, str(path))
