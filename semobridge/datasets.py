"""What the paper fixes per dataset: prompt template, CuPL file, augmentation, training blend."""
from __future__ import annotations

from dataclasses import dataclass, field

from .blend import BlendParams

SHOT_COUNTS = (1, 2, 4, 8, 16)
FLIP = "flip"


@dataclass(frozen=True)
class Augment:
    """A stored augmentation: `copies` augmented copies of every shot.

    kind "flip" is a fixed horizontal flip; "rrc" is a random resized crop with scale
    (`min_scale`, 1), aspect ratio 1 when `square` (the published code) else 3/4 to 4/3, and a
    random flip, plus colour jitter 0.4/0.4/0.4/0.1 when `jitter`.
    """

    copies: int = 0
    kind: str = FLIP
    min_scale: float = 0.5
    jitter: bool = False
    square: bool = False

    def describe(self) -> str:
        if self.copies == 0:
            return "none"
        if self.kind == FLIP:
            return f"{self.copies} flip"
        return f"{self.copies} rrc{'+cj' if self.jitter else ''} ({self.min_scale}{', square' if self.square else ''})"


NONE = Augment(0)
ONE_FLIP = Augment(1)
RRC_CJ_05 = Augment(10, "rrc", 0.5, True)


@dataclass(frozen=True)
class DatasetSpec:
    """One of the paper's eleven datasets."""

    key: str
    template: str | None  # dataset-specific template, None for ImageNet
    cupl: str | None  # file name under the CuPL folder
    ensemble: bool = True  # use the 7 ensemble templates
    augment: tuple[Augment, ...] = (NONE,) * 5  # at 1/2/4/8/16 shots
    train_params: BlendParams = field(default_factory=BlendParams)  # blend fixed during SeMoBridge-T
    keep_last_step: bool = False

    def augment_for(self, shots: int) -> Augment:
        """The published augmentation at the largest listed shot count <= shots."""
        index = max((i for i, k in enumerate(SHOT_COUNTS) if k <= shots), default=0)
        return self.augment[index]


DATASETS: dict[str, DatasetSpec] = {
    spec.key: spec
    for spec in (
        DatasetSpec("caltech101", "a photo of a {}.", "caltech-101.json"),
        DatasetSpec("food101", "a photo of {}, a type of food.", "food-101.json"),
        DatasetSpec("oxford_pets", "a photo of a {}, a type of pet.", "oxford_pets.json"),
        DatasetSpec(
            "imagenet", None, "imagenet.json", augment=(ONE_FLIP,) * 5, keep_last_step=True,
            train_params=BlendParams(smoothness=0.02, alpha=0.6, beta=0.45, gamma=0.7, lambda1=50, lambda2=40, lambda3=10),
        ),
        DatasetSpec("sun397", "a photo of a {}.", "sun397.json", augment=(ONE_FLIP,) * 5),
        DatasetSpec("ucf101", "a photo of a person doing {}.", "ucf101.json", augment=(ONE_FLIP,) * 5),
        DatasetSpec(
            "eurosat", "a centered satellite photo of {}.", "eurosat.json", ensemble=False,
            augment=(ONE_FLIP, RRC_CJ_05, ONE_FLIP, ONE_FLIP, ONE_FLIP),
        ),
        DatasetSpec(
            "fgvc_aircraft", "a photo of a {}, a type of aircraft.", "fgvc_aircraft.json",
            augment=(RRC_CJ_05,) + (ONE_FLIP,) * 4, train_params=BlendParams(lambda2=0.75, lambda3=0.1),
        ),
        DatasetSpec(
            "stanford_cars", "a photo of a {}.", "stanford_cars.json",
            augment=(Augment(10, "rrc", 0.8, False),) + (ONE_FLIP,) * 4,
        ),
        DatasetSpec(
            "oxford_flowers", "a photo of a {}, a type of flower.", "oxford_flowers.json", ensemble=False,
            augment=(RRC_CJ_05, ONE_FLIP, RRC_CJ_05, ONE_FLIP, ONE_FLIP),
        ),
        DatasetSpec(
            "dtd", "{} texture.", "dtd.json", ensemble=False,
            augment=(RRC_CJ_05, RRC_CJ_05, Augment(10, "rrc", 0.8, True), NONE, Augment(5, "rrc", 0.8, True)),
            train_params=BlendParams(alpha=40, gamma=47, lambda1=0.02, lambda2=0.2, lambda3=0.05),
        ),
    )
}

#: Folder names used by CoOp and common copies of the datasets -> our key.
ALIASES = {
    "caltech-101": "caltech101", "food-101": "food101", "oxfordpets": "oxford_pets", "oxford-pets": "oxford_pets",
    "sun": "sun397", "ucf": "ucf101", "ucf-101": "ucf101", "eurosat_rgb": "eurosat", "fgvc-aircraft": "fgvc_aircraft",
    "fgvcaircraft": "fgvc_aircraft", "stanfordcars": "stanford_cars", "stanford-cars": "stanford_cars",
    "flowers102": "oxford_flowers", "oxford-flowers": "oxford_flowers", "oxford_flowers102": "oxford_flowers",
    "describabletextures": "dtd",
}


def find_dataset(name: str | None) -> DatasetSpec | None:
    """The paper's spec for a dataset key or folder name, or None for any other dataset."""
    if not name:
        return None
    key = name.strip().lower().replace(" ", "_")
    return DATASETS.get(ALIASES.get(key, key))
