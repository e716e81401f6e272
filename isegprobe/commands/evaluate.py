"""`isegprobe evaluate`: the standard click protocol for a trained probe, from the cache or online."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import torch
from tqdm import tqdm

from isegprobe.cache import FeatureStore
from isegprobe.cache.schema import FEATURIZER_IDENTITY_KEYS, store_name
from isegprobe.commands.errors import reports_user_errors
from isegprobe.data import create_dataset, resolve_root
from isegprobe.devices import default_device
from isegprobe.errors import UserError
from isegprobe.featurizers import create_featurizer
from isegprobe.inference.evaluation import ObjectResult, evaluate_objects
from isegprobe.inference.metrics import format_table
from isegprobe.inference.predictor import Predictor
from isegprobe.inference.results import ResultsWriter
from isegprobe.inference.tasks import cached_tasks, online_tasks
from isegprobe.inference.visuals import save_overlay
from isegprobe.training.checkpoint import load_probe


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
        raise UserError(f"{store.path}: features from another featurizer than the probe's:\n  " + "\n  ".join(differences))


@click.command("evaluate")
@click.option("--checkpoint", required=True, type=click.Path(exists=True), help="RUN_DIR, or RUN/last.safetensors.")
@click.option("--datasets", "dataset_names", default="grabcut", show_default=True, help="Comma-separated dataset names.")
@click.option("--split", default="test", show_default=True, help="Split of every dataset.")
@click.option("--cache-root", type=click.Path(file_okay=False), help="Folder holding the stores (extract-features --out).")
@click.option("--store", "store_paths", multiple=True, type=click.Path(file_okay=False), help="An explicit store (repeatable).")
@click.option("--online", is_flag=True, help="Run the backbone on the images instead of reading a cache.")
@click.option("--root", default=None, help="Dataset root (when the store's recorded root moved, or with --online).")
@click.option("--max-clicks", default=20, show_default=True, type=click.IntRange(1, 100))
@click.option("--flip", is_flag=True, help="Average with the horizontally flipped view (the store's hflip view).")
@click.option("--threshold", default=0.5, show_default=True, type=float, help="Probability threshold of the mask.")
@click.option("--batch-size", default=8, show_default=True, type=int, help="Objects per probe forward.")
@click.option("--device", default=default_device(), show_default=True)
@click.option("--vis-preds", default=0, show_default=True, type=int, help="Save overlays (clicks drawn) of the first N objects.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the results.")
@reports_user_errors
def evaluate(**options: Any) -> None:
    """Simulate RITM's clicker on every object and report NoC@80/85/90, NoF@85/90, IoU@1 and the mIoU curve.

    \b
    From the cache (the backbone is never loaded):
        isegprobe evaluate --checkpoint runs/probe --datasets grabcut --cache-root cache/ --out results/
    Writes results.json, results.csv and ious.npz (one IoU curve per object) into --out; an interrupted run
    keeps the objects it finished.
    """
    device = torch.device(options["device"])
    probe, metadata = load_probe(options["checkpoint"], device=device)
    if probe.needs_featurizer and not options["online"]:
        raise UserError("this probe fuses clicks before the backbone (early fusion): evaluate it with --online")
    jobs = _jobs(options, metadata)
    featurizer = _online_featurizer(metadata) if options["online"] else None
    if featurizer is not None and probe.needs_featurizer:
        probe.attach_featurizer(featurizer.to(device))
    preprocessing = metadata["preprocessing"]
    predictor = Predictor(probe, preprocessing["mean"], preprocessing["std"], device, featurizer)
    writer = ResultsWriter(options["out_dir"], options["max_clicks"], {"checkpoint": str(options["checkpoint"]),
                                                                      "flip": options["flip"], "online": options["online"]})
    for dataset_name, tasks in jobs:
        progress = tqdm(desc=dataset_name, unit="obj", file=sys.stderr)
        saved = {"count": 0}

        def finished(result: ObjectResult, dataset_name: str = dataset_name) -> None:
            writer.add(dataset_name, result.id, result.ious)
            progress.update(1)
            if saved["count"] < options["vis_preds"]:
                save_overlay(Path(options["out_dir"]) / "vis" / dataset_name, result)
                saved["count"] += 1

        try:
            run = evaluate_objects(predictor, tasks, options["max_clicks"], options["threshold"], options["batch_size"], finished)
        finally:
            writer.write()
            progress.close()
        writer.finish(dataset_name, run.predict_seconds, run.clicks_made)
    summaries = writer.write()
    click.echo(format_table(summaries))
    click.echo(f"results: {Path(options['out_dir']).resolve()} (results.json, results.csv, ious.npz)")


def _jobs(options: dict[str, Any], metadata: dict[str, Any]):
    """(dataset name, object tasks) per requested dataset or store."""
    size = int(metadata["preprocessing"]["size"])
    resize = metadata["preprocessing"].get("resize", "stretch")
    if options["online"]:
        for name in options["dataset_names"].split(","):
            source = create_dataset(name, resolve_root(name, options["root"]), options["split"])
            yield name, online_tasks(source, size, resize, options["flip"])
        return
    for path in _store_paths(options, metadata):
        store = FeatureStore.open(path)
        check_store_matches(store, metadata)
        dataset = store.attrs["dataset"]
        root = options["root"] or dataset["root"]
        source = create_dataset(dataset["name"], root, dataset["split"])
        if options["flip"] and "hflip" not in store.attrs["views"]:
            raise UserError(f"--flip: {path} has no hflip view (extract with --views identity,hflip)")
        yield dataset["name"], cached_tasks(str(path), source, options["flip"])


def _store_paths(options: dict[str, Any], metadata: dict[str, Any]) -> list[Path]:
    if options["store_paths"]:
        return [Path(path) for path in options["store_paths"]]
    if not options["cache_root"]:
        raise UserError("give --cache-root DIR (or --store PATH) to evaluate from the cache, or --online")
    name = metadata["featurizer_provenance"]["name"]
    size = int(metadata["preprocessing"]["size"])
    paths = [Path(options["cache_root"]) / store_name(name, d, options["split"], size) for d in options["dataset_names"].split(",")]
    missing = [str(path) for path in paths if not path.is_dir()]
    if missing:
        raise UserError("--cache-root: no store " + ", ".join(missing) + "; run `isegprobe extract-features` first")
    return paths


def _online_featurizer(metadata: dict[str, Any]):
    provenance = metadata["featurizer_provenance"]
    return create_featurizer(provenance["name"], weights=provenance["weights"])
