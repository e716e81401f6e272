"""data.preload: a store's entries read into memory once give the same entries, and the same training, as reading
the store as it goes; a store that would not fit, or loader workers beside it, are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from stores import builtin_store

from isegprobe.cache import CachedDataset
from isegprobe.cache import preload as preload_module
from isegprobe.config import load_train_config
from isegprobe.errors import UserError
from isegprobe.training import train


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return builtin_store(tmp_path_factory.mktemp("preload"), split="train", views="identity,hflip,rot90", size=56)


def test_preloaded_entries_are_the_stored_ones(store: Path) -> None:
    items, views = [7, 2, 3, 4, 11, 20], ["rot90", "identity"]
    read, preloaded = CachedDataset(store, views, items), CachedDataset(store, views, items)
    preloaded.preload()
    assert preloaded.preloaded and not read.preloaded
    assert len(read) == len(preloaded) == 12
    for index in range(len(read)):
        expected, got = read[index], preloaded[index]
        assert expected.keys() == got.keys()
        for key, value in expected.items():
            if isinstance(value, torch.Tensor):
                assert value.dtype == got[key].dtype and torch.equal(value, got[key]), (index, key)
            else:
                assert value == got[key], (index, key)


def test_writing_into_an_entry_leaves_the_preloaded_store_as_it_was(store: Path) -> None:
    dataset = CachedDataset(store)
    dataset.preload()
    entry = dataset[5]
    before = {key: value.clone() for key, value in entry.items() if isinstance(value, torch.Tensor)}
    for key in before:
        entry[key].zero_()
    again = dataset[5]
    assert all(torch.equal(again[key], before[key]) for key in before)


def test_training_from_a_preloaded_store_is_training_from_the_store(store: Path, tmp_path: Path) -> None:
    overrides = ["data.batch_size=4", "schedule.max_iters=4", "logging.tensorboard=false", "data.size=56"]
    for name, preload in (("read", "false"), ("preloaded", "true")):
        config = load_train_config("quickstart", [*overrides, f"data.preload={preload}"])
        dataset = CachedDataset(store)
        train(config, dataset, tmp_path / name, device="cpu", progress=False)
        assert dataset.preloaded == (preload == "true")
    read, preloaded = (load_file(tmp_path / name / "last.safetensors") for name in ("read", "preloaded"))
    assert read.keys() == preloaded.keys()
    assert all(torch.equal(read[key], preloaded[key]) for key in read)
    rows = [(tmp_path / name / "scalars.csv").read_text() for name in ("read", "preloaded")]
    assert rows[0] == rows[1]


def test_a_store_that_does_not_fit_in_memory_is_refused(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = CachedDataset(store)
    monkeypatch.setattr(preload_module, "available_memory", lambda: 1 << 20)
    with pytest.raises(UserError, match=r"data.preload needs \d\.\d MiB of memory for 24 items x 3 views, and 1.0 MiB"):
        dataset.preload()
    assert not dataset.preloaded


def test_preload_with_loader_workers_is_refused() -> None:
    with pytest.raises(UserError, match="data.preload and data.num_workers 2"):
        load_train_config("quickstart", ["data.preload=true", "data.num_workers=2"])
