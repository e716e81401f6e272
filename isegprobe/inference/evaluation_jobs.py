"""What an evaluation run evaluates: one job per dataset, its objects from a store (found by --store or under
--store-root, checked against the probe's checkpoint) or from the images online, with the folder they were read
from; and the first --max-objects of them."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from isegprobe.cache import FeatureStore
from isegprobe.cache.schema import identity_value, store_fingerprint, store_name
from isegprobe.data import SampleSource, create_dataset, dataset_root, root_origin_told
from isegprobe.data.base import parse_split
from isegprobe.data.catalog import dataset_facts
from isegprobe.errors import DatasetLayoutError, UserError
from isegprobe.featurizers.normalization import DEFAULT_NORMALIZATION
from isegprobe.inference.evaluation import ObjectTask
from isegprobe.inference.tasks import (
    cached_object_count,
    cached_tasks,
    distinct_objects,
    online_object_count,
    online_tasks,
)
from isegprobe.locks import shared_locks
from isegprobe.same_images import warn_when_evaluating_training_images
from isegprobe.training.store_checks import check_store_matches

if TYPE_CHECKING:
    from isegprobe.inference.runner import EvaluationRequest


class EvaluationJob(NamedTuple):
    """One dataset of a run: its name, where its objects come from (the store, or the images online), the objects'
    tasks and how to count them (for the progress bar, before the first one). `online_root` is the --root (or
    configured) folder an online job reads its images from: None for the built-in data and for stores, whose attrs
    record their own."""

    name: str
    source: str
    tasks: Iterator[ObjectTask]
    count: Callable[[], int]
    online_root: Path | None = None
    fingerprint: str | None = None  # a store's (`store_fingerprint`), so that a resume on a store made again refuses
    # The folder the images and masks were read from (None for the built-in data): two datasets of one layout share
    # a name, and `report` says so when the rows of one column read different folders.
    images_root: str | None = None


class FirstObjects:
    """The first `limit` of `tasks` (none when `limit` is 0 or less); `cut` says, once they are taken, whether
    others were left: the dataset is then left unfinished, for a later run to go on with."""

    def __init__(self, tasks: Iterator[ObjectTask], limit: int) -> None:
        self._tasks, self._limit, self.cut = tasks, limit, False

    def __iter__(self) -> Iterator[ObjectTask]:
        for taken, task in enumerate(self._tasks):
            if taken >= self._limit:
                self.cut = True
                return
            yield task


def evaluation_jobs(
    request: EvaluationRequest,
    metadata: dict[str, Any],
    reading: ExitStack,
    only_items: Collection[str] | None = None,
) -> Iterator[EvaluationJob]:
    """A job per requested dataset or store, of the items `only_items` (all when None); zoom-in makes its own
    mirrored crops."""
    size = int(metadata["preprocessing"]["size"])
    resize = metadata["preprocessing"].get("resize", "stretch")
    whole_image_flip = request.flip and not request.zoom_in
    if request.online:
        for name in request.datasets:
            root = dataset_root(name, request.root)
            with root_origin_told(name, request.root):
                source = create_dataset(name, root, request.split)
            where = f"{name} {request.split} at {source.root}, online"
            tasks = distinct_objects(online_tasks(source, size, resize, whole_image_flip, only_items), name)
            yield EvaluationJob(
                name, where, tasks, partial(online_object_count, source), root, images_root=_images_root(source)
            )
        return
    for path in _store_paths(request, metadata):
        reading.enter_context(shared_locks(path))
        store = FeatureStore.open(path)
        check_store_matches(store, metadata)
        dataset = store.attrs["dataset"]
        warn_when_evaluating_training_images(metadata, Path(path), dataset)
        source = _extracted_source(path, dataset, request.root)
        if whole_image_flip and "hflip" not in store.attrs["views"]:
            raise UserError(f"--flip: {path} has no hflip view (extract with --views identity,hflip)")
        tasks = distinct_objects(cached_tasks(str(path), source, whole_image_flip, only_items), dataset["name"])
        yield EvaluationJob(
            dataset["name"],
            str(Path(path).resolve()),
            tasks,
            partial(cached_object_count, str(path)),
            fingerprint=store_fingerprint(store.attrs),
            images_root=_images_root(source),
        )


def _extracted_source(path: str | Path, dataset: Mapping[str, Any], root_option: str | None) -> SampleSource:
    """The dataset a store was extracted from, in --root or in the folder the store recorded: a recorded folder that
    has moved or lost its layout is told as the store's, not as a --root the user never gave."""
    name, split = dataset["name"], dataset["split"]
    if root_option:
        return create_dataset(name, root_option, split)
    recorded = dataset["root"]
    where = f"the folder {path} was extracted from"
    if recorded is not None and not Path(recorded).exists():
        raise UserError(f"{recorded} ({where}) does not exist; pass --root DIR where {name} is now")
    try:
        return create_dataset(name, recorded, split)
    except DatasetLayoutError as error:
        raise UserError(f"{error.root} ({where}): {error.expected}; pass --root DIR where {name} is now") from None


def _store_paths(request: EvaluationRequest, metadata: dict[str, Any]) -> list[Path]:
    if request.stores:
        return [Path(path) for path in request.stores]
    if not request.store_root:
        raise UserError("give --store-root DIR (or --store PATH) to evaluate from stores, or --online")
    root = Path(request.store_root)
    if (root / "zarr.json").is_file():
        raise UserError(
            f"--store-root {root}: a feature store itself, where the folder of stores is asked for; give it with "
            f"--store {root}, or its folder with --store-root {root.parent}"
        )
    name = metadata["featurizer_provenance"]["name"]
    size = int(metadata["preprocessing"]["size"])
    normalization = identity_value(metadata["featurizer_provenance"], "normalization")
    paths = [root / store_name(name, dataset, request.split, size, normalization) for dataset in request.datasets]
    missing = {dataset: path for dataset, path in zip(request.datasets, paths, strict=True) if not path.is_dir()}
    for dataset in missing:  # a misspelled name or split is said as such, not as a store to extract
        dataset_facts(dataset).resolve_split(parse_split(request.split)[0])
    if missing:
        stores = ", ".join(map(str, missing.values()))
        commands = " and ".join(f"`{_extraction_command(metadata, each, request.split, root)}`" for each in missing)
        them = "it" if len(missing) == 1 else "them"
        raise UserError(f"--store-root: no store {stores}; extract {them} for this probe with {commands}")
    return paths


def _extraction_command(metadata: dict[str, Any], dataset: str, split: str, root: Path) -> str:
    """The extract-features command that makes the store this probe is evaluated from: its featurizer and weights,
    input statistics, working size and resize rule, which the store must share with the training store."""
    provenance, preprocessing = metadata["featurizer_provenance"], metadata["preprocessing"]
    words = ["isegprobe", "extract-features", "--featurizer", provenance["name"], "--weights", provenance["weights"]]
    normalization = identity_value(provenance, "normalization")
    if normalization != DEFAULT_NORMALIZATION:
        words += ["--normalization", normalization]
    words += ["--dataset", dataset, "--split", split, "--size", str(preprocessing["size"])]
    if preprocessing.get("resize", "stretch") != "stretch":
        words += ["--resize", preprocessing["resize"]]
    return shlex.join([*words, "--out", str(root)])


def refuse_two_jobs_of_one_dataset(jobs: list[EvaluationJob]) -> None:
    """Results are kept per dataset name (every custom folder or COCO file is `custom`): a second store of a dataset
    already evaluated would be skipped as done, and the results would name it as their source."""
    sources: dict[str, str] = {}
    for job in jobs:
        if job.name in sources:
            raise UserError(
                f"{sources[job.name]} and {job.source} are both {job.name!r}, and an evaluation keeps one result per "
                "dataset: evaluate each into its own --out"
            )
        sources[job.name] = job.source


def _images_root(source: SampleSource) -> str | None:
    return None if source.root is None else root_text(Path(source.root))


def root_text(root: Path | None) -> str | None:
    return None if root is None else str(Path(root).resolve())
