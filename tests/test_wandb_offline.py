"""Weights & Biases logging with the real package in offline mode (no network): `train --wandb` and
`evaluate --wandb` write runs that `wandb sync` can upload later."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import pytest
from launch import run_cli
from stores import builtin_store

pytest.importorskip("wandb", reason="wandb (a test extra) is not installed")


def offline_run_file(folder: Path) -> bytes:
    runs = list((folder / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, f"one offline W&B run expected in {folder}, found {runs}"
    return runs[0].read_bytes()


def test_train_and_evaluate_log_to_an_offline_wandb_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    store = builtin_store(tmp_path / "cache", size=56)
    run_dir, results = tmp_path / "run", tmp_path / "results"
    settings = ["--set", "model.head.width=8", "--set", "data.batch_size=2", "--set", "logging.every_steps=1"]
    settings += ["--set", "logging.image_every_steps=2"]
    trained = run_cli("train", "--config", "quickstart", *settings, "--max-iters", "2", "--wandb",
                      "--store", str(store), "--out", str(run_dir), "--device", "cpu")  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    logged = offline_run_file(run_dir)
    assert b"train/loss" in logged and b"train/predictions" in logged
    pictures = list((run_dir / "wandb").glob("offline-run-*/files/media/images/train/predictions_*.png"))
    assert pictures and all(cv2.imread(str(picture)).max() > 100 for picture in pictures), "not black"

    evaluated = run_cli("evaluate", "--checkpoint", str(run_dir), "--store", str(store), "--max-clicks", "2",
                        "--wandb", "--out", str(results))  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    logged = offline_run_file(results)
    assert b"builtin/mIoU" in logged and b"builtin/NoC@85" in logged
    assert not (results / "wandb_run_id").exists(), "an evaluation is not resumed into its W&B run"


def test_probes_side_by_side_log_a_wandb_run_each_which_resume_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    store = builtin_store(tmp_path / "cache", size=56)
    runs = tmp_path / "runs"
    settings = ["--set", "model.head.width=8", "--set", "data.batch_size=2", "--set", "logging.every_steps=1"]
    settings += ["--wandb", "--out", str(runs), "--device", "cpu"]
    trained = run_cli("train", "--config", "quickstart", "--store", str(store), "--max-iters", "2", *settings,
                      "--variant", "fast optim.lr=1e-3", "--variant", "slow optim.lr=1e-5")  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    resumed = run_cli("train", "--resume", "--max-iters", "3", *settings)
    assert resumed.returncode == 0, resumed.stderr
    for name in ("fast", "slow"):
        rows = (runs / name / "scalars.csv").read_text().splitlines()
        losses = {float(row.split(",")[2]) for row in rows if ",train/loss," in row}
        assert len(losses) == 3
        run_id = (runs / name / "wandb_run_id").read_text()
        offline_runs = sorted((runs / name / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
        assert len(offline_runs) == 2, f"{name}: the run and its resumption, in one W&B run"
        logged = set().union(*(logged_values(path.read_bytes(), "train/loss") for path in offline_runs))
        assert logged == losses, f"{name}: its own steps alone"


def logged_values(run_file: bytes, key: str) -> set[float]:
    """The values logged under `key` in an offline run's records (each a JSON string of its length after the key)."""
    values = set()
    for match in re.finditer(re.escape(key.encode()) + rb"\x82\x01(.)", run_file, re.DOTALL):
        start = match.end()
        values.add(float(run_file[start : start + match.group(1)[0]]))
    return values
