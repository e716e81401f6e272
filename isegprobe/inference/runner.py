"""One evaluation run: a checkpoint, some datasets (from stores or online), results on disk.

Both `isegprobe evaluate` and the quickstart call `run_evaluation`; from the cache the backbone is never built.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from isegprobe.cache import FeatureStore
from isegprobe.cache.schema import FEATURIZER_IDENTITY_KEYS, store_name
from isegprobe.data import create_dataset, resolve_root
from isegprobe.errors import UserError
from isegprobe.featurizers import create_featurizer
from isegprobe.inference.evaluation import ObjectResult, ObjectTask, evaluate_objects
from isegprobe.inference.predictor import Predictor
from isegprobe.inference.results import ResultsWriter
from isegprobe.inference.tasks import cached_tasks, online_tasks
from isegprobe.inference.visuals import save_overlay
from isegprobe.training.checkpoint import load_probe


@dataclass
class EvaluationRequest:
    checkpoint: str
    out_dir: str
    datasets: list[str] = field(default_factory=lambda: ["grabcut"])
    split: str = "test"
    cache_root: str | None = None
    stores: list[str] = field(default_factory=list)
    online: bool = False
    root: str | None = None
    max_clicks: int = 20
    flip: bool = False
    threshold: float = 0.5
    batch_size: int = 8
    device: str = "cpu"
    vis_preds: int = 0


def check_store_matches(store: FeatureStore, metadata: dict[str, Any]) -> None:
    """A probe only makes sense on features from the featurizer (and weights) it was trained on."""
    trained = metadata.get("featurizer_provenance") or {}
    cached = store.attrs["featurizer"]
    differences = [
        f"{key}: checkpoint {trained.get(key)!r}, store {cached.get(key)!r}"
        for key in FEATURIZER_IDENTITY_KEYS
        if trained.get(key) != cached.get(key)
    ]
    if differences:
        raise UserError(
            f"{store.path}: features from another featurizer than the probe's:\n  " + "\n  ".join(differences)
        )


def run_evaluation(request: EvaluationRequest) -> dict[str, dict[str, Any]]:
    """Evaluate every requested dataset; returns the per-dataset summaries also written to `out_dir`."""
    device = torch.device(request.device)
    probe, metadata = load_probe(request.checkpoint, device=device)
    if probe.needs_featurizer and not request.online:
        raise UserError("this probe fuses clicks before the backbone (early fusion): evaluate it with --online")
    jobs = list(_jobs(request, metadata))
    featurizer = _online_featurizer(metadata) if request.online else None
    if featurizer is not None and probe.needs_featurizer:
        probe.attach_featurizer(featurizer.to(device))
    preprocessing = metadata["preprocessing"]
    predictor = Predictor(probe, preprocessing["mean"], preprocessing["std"], device, featurizer)
    run_info = {"checkpoint": str(request.checkpoint), "flip": request.flip, "online": request.online}
    writer = ResultsWriter(request.out_dir, request.max_clicks, run_info)
    for dataset_name, tasks in jobs:
        _evaluate_dataset(predictor, request, writer, dataset_name, tasks)
    return writer.write()


def _evaluate_dataset(
    predictor: Predictor, request: EvaluationRequest, writer: ResultsWriter, name: str, tasks: Iterator[ObjectTask]
) -> None:
    progress = tqdm(desc=name, unit="obj", file=sys.stderr)
    pictures = Path(request.out_dir) / "vis" / name

    def finished(result: ObjectResult) -> None:
        if progress.n < request.vis_preds:
            save_overlay(pictures, result)
        writer.add(name, result.id, result.ious)
        progress.update(1)

    try:
        run = evaluate_objects(predictor, tasks, request.max_clicks, request.threshold, request.batch_size, finished)
    finally:
        writer.write()
        progress.close()
    writer.finish(name, run.predict_seconds, run.clicks_made)


def _jobs(request: EvaluationRequest, metadata: dict[str, Any]) -> Iterator[tuple[str, Iterator[ObjectTask]]]:
    """(dataset name, object tasks) per requested dataset or store."""
    size = int(metadata["preprocessing"]["size"])
    resize = metadata["preprocessing"].get("resize", "stretch")
    if request.online:
        for name in request.datasets:
            source = create_dataset(name, resolve_root(name, request.root), request.split)
            yield name, online_tasks(source, size, resize, request.flip)
        return
    for path in _store_paths(request, metadata):
        store = FeatureStore.open(path)
        check_store_matches(store, metadata)
        dataset = store.attrs["dataset"]
        source = create_dataset(dataset["name"], request.root or dataset["root"], dataset["split"])
        if request.flip and "hflip" not in store.attrs["views"]:
            raise UserError(f"--flip: {path} has no hflip view (extract with --views identity,hflip)")
        yield dataset["name"], cached_tasks(str(path), source, request.flip)


def _store_paths(request: EvaluationRequest, metadata: dict[str, Any]) -> list[Path]:
    if request.stores:
        return [Path(path) for path in request.stores]
    if not request.cache_root:
        raise UserError("give --cache-root DIR (or --store PATH) to evaluate from the cache, or --online")
    name = metadata["featurizer_provenance"]["name"]
    size = int(metadata["preprocessing"]["size"])
    paths = [Path(request.cache_root) / store_name(name, dataset, request.split, size) for dataset in request.datasets]
    missing = [str(path) for path in paths if not path.is_dir()]
    if missing:
        raise UserError("--cache-root: no store " + ", ".join(missing) + "; run `isegprobe extract-features` first")
    return paths


def _online_featurizer(metadata: dict[str, Any]) -> torch.nn.Module:
    provenance = metadata["featurizer_provenance"]
    return create_featurizer(provenance["name"], weights=provenance["weights"])
