"""The small labelled dataset bundled with the package, used when no `--data` is given."""
from __future__ import annotations

from pathlib import Path

DEMO_DATASET = "fashion-mnist"


def demo_dataset() -> Path:
    """Folder of the bundled Fashion-MNIST sample: `{train,val,test}/<class>/*.png`.

    Raises FileNotFoundError if the data is not installed (e.g. a build that
    left out the package data).
    """
    root = Path(__file__).resolve().parent / "demo_data" / DEMO_DATASET
    if not (root / "train").is_dir():
        raise FileNotFoundError(
            f"bundled demo dataset {DEMO_DATASET!r} not found at {root}; "
            "reinstall semobridge or pass --data explicitly"
        )
    return root
