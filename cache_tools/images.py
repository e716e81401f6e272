"""Whether every finished item of a store holds its own image: its stored pixels compared with the dataset's image of
the same id, made again at the working size as extraction made it.

A store's checksums show that each entry's bytes are the ones its extraction wrote, not that they sit at the right
item: chunk files copied from another store, or swapped between two items, carry their checksums with them and pass.
The dataset the store was made of tells them apart.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from isegprobe.cache import FeatureStore
from isegprobe.cache.image_match import image_mismatch, working_image
from isegprobe.cache.reader import open_tensorstore, read_items
from isegprobe.data import create_dataset


def items_of_other_images(path: str | Path, root: str | None = None) -> tuple[str | None, list[str]]:
    """(the folder the images were read from, problems: the finished items whose pixels are not their image in the
    dataset at `root`, else at the root the store records)."""
    store = FeatureStore.open(path)
    dataset = store.attrs["dataset"]
    source = create_dataset(dataset["name"], root or dataset["root"], dataset["split"])
    images = open_tensorstore(store.path, "images")[:, store.identity_pixels]
    item_ids, done, preprocessing = store.attrs["item_ids"], store.done_mask(), store.attrs["preprocessing"]
    problems = []
    with tqdm(desc="images", total=int(done.sum()), unit="item", disable=None, file=sys.stderr) as progress:
        for shard in store.shard_ranges():
            finished = [index for index in shard if done[index]]
            if not finished:
                continue
            stored = read_items(store, images, "images", shard)
            for index in finished:
                fresh = working_image(source[index].image, preprocessing)
                kept = np.asarray(stored[index - shard.start])
                mismatch = image_mismatch(kept, fresh)
                if mismatch is not None:
                    problems.append(f"item {index} ({item_ids[index]}): not its image under {source.root} ({mismatch})")
                progress.update()
    return source.root, problems
