"""Silence third-party advice that libraries log and the user cannot act on."""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator


def quiet_root_logger(level: int = logging.ERROR) -> contextlib.AbstractContextManager[None]:
    """Drop root-logger records below `level` inside the block."""
    return quiet_logger(None, level)


@contextlib.contextmanager
def quiet_logger(name: str | None, level: int = logging.ERROR) -> Iterator[None]:
    """Drop the records of logger `name` (None: the root logger) below `level` inside the block."""
    root = logging.getLogger(name)
    saved = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(saved)
