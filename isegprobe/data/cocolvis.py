"""COCO+LVIS: RITM's combined annotations (cocolvis_annotation.tar.gz) over the LVIS v1 (COCO 2017) images.

Layout, the annotations unpacked into the LVIS folder: `<split>/hannotation.pickle` (image id -> {'hierarchy':
{instance id: parent/children or None}, 'num_instance_masks': n, ...}), `<split>/masks/<image id>.pickle` (a pair:
PNG-encoded layers, and for every instance and stuff region its (layer, value)), `<split>/images/<image id>.jpg`.
Objects can overlap because they live on different layers; a per-image sample paints them in id order, later on top,
and `-instances` gives each its exact mask. Like RITM with `stuff_prob=0`, stuff regions are not objects; the
part/whole hierarchy RITM uses when sampling training objects is not kept.
The files are Python pickles; they are read by an unpickler that admits builtin containers and numpy arrays only
(data/restricted_pickle.py), so a crafted file cannot run code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from isegprobe.data.base import (
    DatasetBase,
    build_source,
    instance_sample_of,
    is_plain_name,
    require_same_size,
)
from isegprobe.data.image_io import decode_packed_layer, read_rgb
from isegprobe.data.instance_maps import paint_instances
from isegprobe.data.registry import SampleSource, register_dataset
from isegprobe.data.restricted_pickle import read_ritm_pickle
from isegprobe.data.sample import Sample
from isegprobe.errors import DatasetLayoutError, UserError


class CocoLvisDataset(DatasetBase):
    def __init__(self, root: Path, split: str) -> None:
        self.name, self.split, self.root = "cocolvis", split, str(root)
        split_dir = root / split
        self.image_dir, self.mask_dir = split_dir / "images", split_dir / "masks"
        annotation_file = split_dir / "hannotation.pickle"
        if not annotation_file.is_file():
            raise DatasetLayoutError(
                root, f"expected RITM's COCO+LVIS annotations, {split}/hannotation.pickle not found"
            )
        annotations = read_ritm_pickle(annotation_file)
        try:
            self._items = [(str(image_id), sorted(info["hierarchy"])) for image_id, info in sorted(annotations.items())]
        except (AttributeError, KeyError, TypeError) as error:
            raise UserError(
                f"{annotation_file}: not RITM's hannotation format ({type(error).__name__}: {error})"
            ) from None
        if not self._items:
            raise UserError(f"{annotation_file}: lists no image (RITM's hannotation: image id -> its instances)")
        for image_id, _ in self._items:
            if not is_plain_name(image_id):
                raise UserError(
                    f"{annotation_file}: image id {image_id!r} is not a file name (the id names images/<id>.jpg and "
                    "masks/<id>.pickle, so it has no / or ..)"
                )

    def __len__(self) -> int:
        return len(self._items)

    def ids(self) -> list[str]:
        return [image_id for image_id, _ in self._items]

    def _read(self, index: int, instances: list[int]) -> tuple[np.ndarray, list[np.ndarray]]:
        image_id = self._items[index][0]
        image_path = self.image_dir / f"{image_id}.jpg"
        image = read_rgb(image_path)
        mask_path = self.mask_dir / f"{image_id}.pickle"
        packed = read_ritm_pickle(mask_path)
        try:
            encoded_layers, mapping = packed
            layers = [
                decode_packed_layer(np.asarray(layer, np.uint8).tobytes(), str(mask_path)) for layer in encoded_layers
            ]
            if any(layer is None for layer in layers):
                raise ValueError("a layer is not a decodable image")
            for number, layer in enumerate(layers):
                _require_single_channel(mask_path, number, layer)
                require_same_size(mask_path, layer.shape, image_path, image.shape)
            masks = [layers[mapping[instance][0]] == mapping[instance][1] for instance in instances]
        except (ValueError, TypeError, IndexError, KeyError) as error:
            raise UserError(f"{mask_path}: not RITM's packed-mask format ({type(error).__name__}: {error})") from None
        return image, masks

    def __getitem__(self, index: int) -> Sample:
        image, masks = self._read(index, self._items[index][1])
        labels = paint_instances(masks, image.shape[:2])
        return Sample(id=self._items[index][0], image=image, labels=labels, ignore=np.zeros(labels.shape, bool))

    def instance_counts(self) -> list[int]:
        return [len(instances) for _, instances in self._items]

    def instance_sample(self, index: int, instance: int) -> Sample:
        image_id, instances = self._items[index]
        image, (mask,) = self._read(index, [instances[instance - 1]])
        return instance_sample_of(image_id, instance, image, mask)


def _require_single_channel(mask_path: Path, number: int, layer: np.ndarray) -> None:
    """A layer holds one value per pixel (which object is there); a colour PNG decodes to several, and comparing
    it with a value gave per-channel masks that painting the objects failed on with an IndexError."""
    if layer.ndim != 2:
        raise UserError(
            f"{mask_path}: its mask layer {number} decodes as an image of {layer.shape[2]} channels; each layer must "
            "be a single-channel map (a greyscale PNG of object values)"
        )


@register_dataset("cocolvis")
def _create(root: Path | None, split: str) -> SampleSource:
    return build_source("cocolvis", root, split, CocoLvisDataset)
