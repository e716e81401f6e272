"""Berkeley (McGuinness & O'Connor 2010): 100 objects on 96 images, in the layout of the f-BRS/RITM archive.

`images/` and `masks/` (.png), matched by stem. RITM reads these masks with its GrabCut loader, whose rule we keep so
that NoC agrees with RITM-family papers (`binary_masks`): first channel > 128 is object, exactly 128 ignored; the
masks' anti-aliased edge values below 128 are background, but for 1, which that loader takes for object. An image
with several objects has one mask per object: `<stem>.png`, `<stem>_2.png`, ...; an archive that instead copies the
image under each mask's name works as well, one image each, and is what RITM's loader needs, since it reads one mask
per image file (numbered masks without images of their own, it would skip). Split `test` gives one sample per image;
`test-instances` one per mask file, each with its own ignore band.
"""

from __future__ import annotations

from pathlib import Path

from isegprobe.data.base import build_source
from isegprobe.data.folder_pairs import MaskFolderDataset, ritm_grabcut_mask
from isegprobe.data.registry import SampleSource, register_dataset


def berkeley_dataset(root: Path, split: str) -> MaskFolderDataset:
    return MaskFolderDataset("berkeley", root, split, "images", "masks", ritm_grabcut_mask, numbered_masks=True)


@register_dataset("berkeley")
def _create(root: Path | None, split: str) -> SampleSource:
    return build_source("berkeley", root, split, berkeley_dataset)
