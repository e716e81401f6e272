"""Stage two end to end on real stores: a probe trained from the cache segments better than an untrained one."""

from __future__ import annotations

import numpy as np
from stores import builtin_store

from isegprobe.cache import CachedDataset
from isegprobe.config import load_train_config
from isegprobe.data import create_dataset
from isegprobe.inference.evaluation import evaluate_objects
from isegprobe.inference.predictor import Predictor
from isegprobe.inference.tasks import cached_tasks
from isegprobe.model.probe import ISProbe
from isegprobe.training.checkpoint import load_probe
from isegprobe.training.trainer import train


def miou_after_three_clicks(probe, store, preprocessing) -> float:
    predictor = Predictor(probe, preprocessing["mean"], preprocessing["std"], probe_device(probe))
    source = create_dataset("builtin", split="train")
    run = evaluate_objects(predictor, cached_tasks(str(store), source, flip=False), max_clicks=3)
    return float(np.mean([result.ious[2] for result in run.results]))


def probe_device(probe):
    return next(probe.parameters()).device


def test_trained_probe_beats_untrained_after_three_clicks(tmp_path):
    store = builtin_store(tmp_path / "cache", split="train", size=112)
    dataset = CachedDataset(store)
    config = load_train_config("quickstart", ["schedule.max_iters=120"])
    summary = train(config, dataset, tmp_path / "run", device="cpu", progress=False)
    assert summary.step == 120
    trained, metadata = load_probe(tmp_path / "run" / "last.safetensors")
    untrained = ISProbe(config.model, **metadata["model"]).eval()
    before = miou_after_three_clicks(untrained, store, dataset.preprocessing)
    after = miou_after_three_clicks(trained, store, dataset.preprocessing)
    assert after > before + 0.15, (before, after)
