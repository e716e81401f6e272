"""What is known about each dataset family before touching the disk: splits, published counts, on-disk layout.

`datasets list` prints it, `datasets check` compares what it counts with it, and `datasets download` uses the layout to
find the dataset's folder inside an archive. Counts are the ones the field publishes (the iSegProbe research code's
README, RITM's paper) for the evaluation protocol: every annotated instance is one object to segment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from isegprobe.errors import UserError

BUILTIN = "builtin"  # the scenes that ship in the package: the one dataset read without a root folder


def refuse_a_builtin_root(root: object) -> None:
    """A folder given for the builtin scenes was meant for a dataset on disk: ignored, it said nothing."""
    if root is not None:
        raise UserError(f"--root {root}: the builtin scenes are made by code and read no folder; leave --root out")


@dataclass(frozen=True)
class DatasetFacts:
    name: str
    title: str
    folder: str | None  # its folder under a data directory (downloads, the default root); None: no such convention
    splits: tuple[str, ...]  # empty: any split name is accepted (the data have no splits)
    eval_split: str  # what `test` means when the family has no split of that name
    layouts: tuple[tuple[str, ...], ...]  # alternatives; each lists paths that must all exist under the root
    published: dict[str, tuple[int, int]] = field(default_factory=dict)  # split -> (images, instances)
    note: str = ""  # published sizes that are only approximate
    aliases: dict[str, str] = field(default_factory=dict)

    def resolve_split(self, split: str) -> str:
        """The split's real name: aliases (`val` -> `val2017`) and `test` -> the evaluation split."""
        split = self.aliases.get(split, split)
        if not self.splits or split in self.splits:
            return split
        if split == "test":
            return self.eval_split
        known = ", ".join(self.splits + tuple(self.aliases))
        test = "" if self.eval_split == "test" else f" (and test = {self.eval_split})"
        raise UserError(f"--split: {self.name} has splits {known}{test}, not {split!r}")

    @property
    def folder_holds(self) -> str:
        """What the dataset's folder holds, for messages: `data_GT and boundary_GT`, alternatives joined by `or`."""
        return " or ".join(" and ".join(layout) for layout in self.layouts if layout)

    def published_text(self, split: str) -> str:
        counts = self.published.get(split)
        if counts is not None:
            return f"{counts[0]} images / {counts[1]} instances"
        return self.note or "-"


def _facts(*entries: DatasetFacts) -> dict[str, DatasetFacts]:
    return {facts.name: facts for facts in entries}


CATALOG: dict[str, DatasetFacts] = _facts(
    DatasetFacts(
        name=BUILTIN,
        title="procedural scenes shipped as code",
        folder=None,
        splits=("train", "test"),
        eval_split="test",
        layouts=((),),
        note="24 train / 12 test images, 1-3 objects each",
    ),
    DatasetFacts(
        name="grabcut",
        title="GrabCut (Rother et al. 2004)",
        folder="GrabCut",
        splits=("test",),
        eval_split="test",
        layouts=(("data_GT", "boundary_GT"),),
        published={"test": (50, 50)},
    ),
    DatasetFacts(
        name="berkeley",
        title="Berkeley (McGuinness & O'Connor 2010)",
        folder="Berkeley",
        splits=("test",),
        eval_split="test",
        layouts=(("images", "masks"),),
        published={"test": (96, 100)},
    ),
    DatasetFacts(
        name="davis",
        title="DAVIS, the 345-frame interactive-segmentation test set",
        folder="DAVIS",
        splits=("test",),
        eval_split="test",
        layouts=(("img", "gt"),),
        published={"test": (345, 345)},
    ),
    DatasetFacts(
        name="coco_mval",
        title="COCO MVal (800 COCO objects)",
        folder="COCO_MVal",
        splits=("test",),
        eval_split="test",
        layouts=(("img", "gt"),),
        published={"test": (800, 800)},
    ),
    DatasetFacts(
        name="sbd",
        title="Semantic Boundaries Dataset",
        folder="SBD",
        splits=("train", "val"),
        eval_split="val",
        layouts=(("img", "inst", "train.txt"), ("img", "inst", "val.txt")),
        published={"train": (8498, 20172), "val": (2857, 6671)},
    ),
    DatasetFacts(
        name="pascalvoc",
        title="PASCAL VOC 2012 instance masks",
        folder="VOCdevkit/VOC2012",
        splits=("train", "val", "trainval"),
        eval_split="val",
        layouts=(("JPEGImages", "SegmentationObject", "ImageSets/Segmentation"),),
        published={"val": (1449, 3417)},
    ),
    DatasetFacts(
        name="cocolvis",
        title="COCO+LVIS (RITM's combined annotations over LVIS v1 images)",
        folder="LVIS",
        splits=("train", "val"),
        eval_split="val",
        layouts=(("train/hannotation.pickle",), ("val/hannotation.pickle",)),
        note="about 99k images / 1.5M instances (train)",
    ),
    DatasetFacts(
        name="lvis",
        title="LVIS v1.0",
        folder="LVIS",
        splits=("train", "val"),
        eval_split="val",
        layouts=tuple((f"{split}/{stem}_{split}.json",) for stem in ("lvis", "lvis_v1") for split in ("train", "val")),
        note="about 100k images / 1.2M instances (total)",
    ),
    DatasetFacts(
        name="coco",
        title="MS COCO 2017 instances",
        folder="COCO",
        splits=("train2017", "val2017"),
        eval_split="val2017",
        layouts=(("annotations/instances_train2017.json",), ("annotations/instances_val2017.json",)),
        note="about 118k images / 1.2M instances (train)",
        aliases={"train": "train2017", "val": "val2017"},
    ),
    DatasetFacts(
        name="ade20k",
        title="ADE20K (full release or the scene-parsing challenge)",
        folder="ADE20K",
        splits=("train", "val"),
        eval_split="val",
        layouts=(("images/training",), ("images/validation",)),
        note="about 22k images / 434k instances (total)",
    ),
    DatasetFacts(
        name="openimages",
        title="Open Images V6 segmentation masks",
        folder="OpenImages",
        splits=("train", "validation", "test"),
        eval_split="validation",
        layouts=(("train/images",), ("validation/images",), ("test/images",)),
        note="about 944k images / 2.6M instances (total)",
        aliases={"val": "validation"},
    ),
    DatasetFacts(
        name="custom",
        title="your own data: images/ + masks/ with the same stem, or a COCO-format JSON",
        folder=None,
        splits=(),
        eval_split="test",
        layouts=(("images", "masks"),),
    ),
)


def dataset_facts(name: str) -> DatasetFacts:
    facts = CATALOG.get(name.lower())
    if facts is None:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(sorted(CATALOG))}")
    return facts


def has_layout(name: str, root: Path) -> bool:
    """Whether `root` looks like `name`'s folder (a COCO-format JSON file counts for `custom`)."""
    if name == "custom" and root.is_file():
        return root.suffix.lower() == ".json"
    return root.is_dir() and any(
        all((root / part).exists() for part in layout) for layout in dataset_facts(name).layouts
    )
