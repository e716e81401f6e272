"""The training loader's workers: `data.num_workers: auto` starts them on a GPU for a store read as training goes,
and a run with workers trains exactly as one without."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from stores import builtin_store

from isegprobe.cache import CachedDataset
from isegprobe.config import DataConfig
from isegprobe.config_loading import load_train_config
from isegprobe.errors import UserError
from isegprobe.loader_workers import default_loader_workers
from isegprobe.training import train
from isegprobe.training.loaders import AUTO_GPU_WORKERS, loader_workers, training_loader


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return builtin_store(tmp_path_factory.mktemp("loaders"), split="train", size=56)


def test_auto_starts_workers_on_a_gpu_for_a_store_read_as_training_goes(store: Path) -> None:
    config = load_train_config("quickstart", [])
    assert config.data.num_workers == "auto"
    read, preloaded = CachedDataset(store), CachedDataset(store)
    preloaded.preload()
    gpu = torch.device("cuda")
    assert loader_workers(config, gpu, read) == min(AUTO_GPU_WORKERS, default_loader_workers()) > 0
    assert loader_workers(config, gpu, preloaded) == 0
    assert loader_workers(config, torch.device("cpu"), read) == 0
    assert loader_workers(load_train_config("quickstart", ["data.num_workers=3"]), gpu, preloaded) == 3
    assert f"on a GPU, up to {AUTO_GPU_WORKERS} " in DataConfig.__doc__, "--show-config says how many"
    assert training_loader(read, config, torch.device("cpu"), online=False).num_workers == 0


def test_far_more_workers_than_cores_are_refused_naming_the_key(store: Path) -> None:
    """A thousand spawned workers took minutes on 2 cores before the first batch."""
    config = load_train_config("quickstart", ["data.num_workers=100000"])
    with pytest.raises(UserError, match=r"data.num_workers 100000: more loader worker processes than \d+"):
        loader_workers(config, torch.device("cpu"), CachedDataset(store))


@pytest.mark.parametrize("value", ["-1", "many", "1.5"])
def test_a_bad_number_of_workers_is_refused_naming_the_key(value: str) -> None:
    with pytest.raises(UserError, match="data.num_workers"):
        load_train_config("quickstart", [f"data.num_workers={value}"])


def test_training_with_loader_workers_is_training_without(store: Path, tmp_path: Path) -> None:
    overrides = ["data.batch_size=4", "schedule.max_iters=4", "logging.tensorboard=false", "data.size=56"]
    for workers in (0, 2):
        config = load_train_config("quickstart", [*overrides, f"data.num_workers={workers}"])
        train(config, CachedDataset(store), tmp_path / str(workers), device="cpu", progress=False)
    without, with_workers = (load_file(tmp_path / name / "last.safetensors") for name in ("0", "2"))
    assert without.keys() == with_workers.keys()
    assert all(torch.equal(without[key], with_workers[key]) for key in without)
    rows = [(tmp_path / name / "scalars.csv").read_text() for name in ("0", "2")]
    assert rows[0] == rows[1]


@pytest.mark.parametrize(("batch_size", "batches"), [(8, [8, 8, 8]), (7, [7, 7, 7]), (32, [24])])
def test_an_epoch_gives_its_full_batches_only(store: Path, batch_size: int, batches: list[int]) -> None:
    """RITM's training loader drops an epoch's last, partial batch; a store smaller than a batch is one batch."""
    config = load_train_config("quickstart", [f"data.batch_size={batch_size}", "data.size=56"])
    data = CachedDataset(store)
    loader = training_loader(data, config, torch.device("cpu"), online=False)
    assert len(loader.dataset) == 24
    assert [len(batch["item"]) for batch in loader] == batches


def test_resuming_a_run_past_its_schedule_says_there_is_nothing_to_train(
    store: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """And leaves the run as it was: config.yaml was rewritten with the shorter schedule under a "settings changed"
    header, which the run's checkpoints, never written again, did not keep."""
    overrides = ["data.batch_size=4", "logging.tensorboard=false", "data.size=56"]
    train(load_train_config("quickstart", [*overrides, "schedule.max_iters=2"]), CachedDataset(store), tmp_path,
          device="cpu", progress=False)  # fmt: skip
    before = {name: (tmp_path / name).read_bytes() for name in ("config.yaml", "last.json", "last.safetensors")}
    with caplog.at_level("INFO"):
        summary = train(load_train_config("quickstart", [*overrides, "schedule.max_iters=1"]), CachedDataset(store),
                        tmp_path, device="cpu", resume=True, progress=False)  # fmt: skip
    assert summary.step == 2
    assert "is at step 2 already, at or past the 1 steps of this schedule: nothing left to train" in caplog.text
    assert "settings changed" not in caplog.text
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
