"""data.preload: a store's entries read into memory once give the same entries, and the same training, as reading
the store as it goes, in host memory or kept on the device; a store that would not fit, or loader workers beside it,
are refused (on the device: kept in host memory); `auto` preloads on a GPU only, and only what fits."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from stores import builtin_store

from isegprobe.cache import CachedDataset
from isegprobe.cache import preload as preload_module
from isegprobe.config_loading import load_train_config
from isegprobe.errors import UserError
from isegprobe.model import ISProbe
from isegprobe.training import Trainer, loaders, train
from isegprobe.training.loaders import preloads, training_loader
from isegprobe.training.run_setup import probe_dims


class NotAStore(torch.utils.data.Dataset):
    """A dataset that is not a feature store: nothing to preload."""

    def __len__(self) -> int:
        return 1


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


DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")),
]


@pytest.mark.parametrize("device", DEVICES)
def test_entries_kept_on_a_device_are_the_stored_ones(store: Path, device: str) -> None:
    items, views = [7, 2, 3, 4, 11, 20], ["rot90", "identity", "hflip"]
    read, kept = CachedDataset(store, views, items), CachedDataset(store, views, items)
    kept.preload(device)
    assert kept.preloaded and kept.device.type == device
    for index in range(len(read)):
        expected, got = read[index], kept[index]
        assert expected.keys() == got.keys()
        for key, value in expected.items():
            if isinstance(value, torch.Tensor):
                on_device = got[key].device.type == device or key == "valid_box"
                assert on_device and got[key].is_contiguous() and value.dtype == got[key].dtype, (index, key)
                assert torch.equal(value, got[key].cpu()), (index, key)
            else:
                assert value == got[key], (index, key)
    entry = kept[5]
    entry["image"].zero_()
    assert torch.equal(kept[5]["image"].cpu(), read[5]["image"]), "an entry is a copy, not the kept arrays"


@pytest.mark.parametrize("device", DEVICES)
def test_batches_from_a_store_kept_on_the_device_are_the_stores(store: Path, device: str) -> None:
    """What a training step sees (images, features, valid pixels, target, clicks on the device) from the store kept
    on the device, its samples made and its clicks drawn there, against the store read and the loader's clicks."""
    batches = {}
    for name, options in {"read": ["data.click_sampling=loader"], "kept": ["data.click_sampling=device"]}.items():
        config = load_train_config("quickstart", ["data.batch_size=5", "data.size=56", *options])
        dataset = CachedDataset(store)
        if name == "kept":
            dataset.preload(device)
        loader = training_loader(dataset, config, torch.device(device), online=False)
        loader.sampler.start(3)
        trainer = Trainer(config, ISProbe(config.model, **probe_dims(dataset, None, 56)), dataset.preprocessing, device)
        batches[name] = [trainer.to_device(batch) for batch, _ in zip(loader, range(3), strict=False)]
    for read, kept in zip(batches["read"], batches["kept"], strict=True):
        for field in ("images", "features", "target", "valid", "clicks"):
            expected, got = getattr(read, field), getattr(kept, field)
            assert got.device.type == device and got.dtype == expected.dtype and torch.equal(got, expected), field


def test_training_from_a_store_kept_on_the_device_is_training_from_the_store(store: Path, tmp_path: Path) -> None:
    """The whole run, on a CPU (where the arithmetic repeats bit for bit): the same weights and logs."""
    overrides = ["data.batch_size=4", "schedule.max_iters=4", "logging.tensorboard=false", "data.size=56"]
    runs = {"read": ["data.click_sampling=loader"], "kept": ["data.preload=true", "data.click_sampling=device"]}
    for name, options in runs.items():
        config = load_train_config("quickstart", [*overrides, *options])
        dataset = CachedDataset(store)
        if name == "kept":
            dataset.preload("cpu")  # on a GPU, data.preload does this itself (loaders.preload_device)
        train(config, dataset, tmp_path / name, device="cpu", progress=False)
    read, kept = (load_file(tmp_path / name / "last.safetensors") for name in runs)
    assert read.keys() == kept.keys()
    assert all(torch.equal(read[key], kept[key]) for key in read)
    rows = [(tmp_path / name / "scalars.csv").read_text() for name in runs]
    assert rows[0] == rows[1]


def test_a_store_that_does_not_fit_on_the_device_stays_in_host_memory(
    store: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    dataset = CachedDataset(store)
    free = {"calls": 0}

    def little_free_on_the_device() -> int:  # host memory is asked first (plenty), the device's second (64 KiB)
        free["calls"] += 1
        return 64 << 30 if free["calls"] == 1 else 64 << 10

    monkeypatch.setattr(preload_module, "available_memory", little_free_on_the_device)
    dataset.preload("cpu")
    assert dataset.preloaded and dataset.device is None
    assert "data.preload keeps the store in host memory: on cpu it would take" in caplog.text
    assert "of the 0.1 MiB free" in caplog.text


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


def test_preload_bytes_are_what_preloading_takes(store: Path) -> None:
    dataset = CachedDataset(store, views=["hflip", "identity"])
    expected = dataset.preload_bytes()
    dataset.preload()
    assert expected == sum(array.nbytes for array in dataset._in_memory.values())


@pytest.mark.parametrize(
    ("overrides", "device", "online", "expected"),
    [
        ([], "cuda", False, True),
        ([], "cpu", False, False),  # a CPU step's arithmetic hides the reads
        ([], "cuda", True, False),  # online: the features would be held for nothing
        (["data.num_workers=2"], "cuda", False, False),  # each worker would hold a copy
        (["data.preload=true"], "cpu", False, True),
        (["data.preload=false"], "cuda", False, False),
    ],
)
def test_preload_auto_reads_the_store_into_memory_on_a_gpu_only(
    store: Path, overrides: list[str], device: str, online: bool, expected: bool
) -> None:
    config = load_train_config("quickstart", overrides)
    assert preloads(config, torch.device(device), online, (CachedDataset(store), None)) == expected


def test_preload_auto_reads_from_the_store_what_would_not_fit_in_every_ranks_memory(
    store: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_train_config("quickstart", [])
    stores = (CachedDataset(store), CachedDataset(store, views=["identity"]))
    needed = sum(dataset.preload_bytes() for dataset in stores)
    monkeypatch.setattr(loaders, "available_memory", lambda: int(needed / preload_module.MEMORY_SHARE) + 1)
    with caplog.at_level(logging.INFO, logger="isegprobe.training.loaders"):
        assert preloads(config, torch.device("cuda"), False, stores, world=1)
        assert not preloads(config, torch.device("cuda"), False, stores, world=2)
    assert (
        "(2 rank(s)) of the" in caplog.text
        and "MiB of memory available: read from the store at every step" in caplog.text
    )
    assert not preloads(config, torch.device("cuda"), False, (NotAStore(), None))


def test_data_preload_takes_true_false_or_auto() -> None:
    assert load_train_config("quickstart", []).data.preload == "auto"
    assert load_train_config("quickstart", ["data.preload=auto", "data.num_workers=2"]).data.num_workers == 2
    with pytest.raises(UserError, match="config key 'data.preload' must be one of true, false, auto, got 'always'"):
        load_train_config("quickstart", ["data.preload=always"])


def test_preloading_shows_a_bar_naming_the_store_and_its_size(store: Path, capsys: pytest.CaptureFixture) -> None:
    CachedDataset(store).preload(progress=True)
    bar = capsys.readouterr().err
    assert f"data.preload {store.name} (" in bar and "MiB)" in bar and "24/24" in bar
