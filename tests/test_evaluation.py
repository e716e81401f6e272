"""Stage two's evaluation end to end on real GrabCut images: CLI, result files, flip, zoom-in, Ctrl-C, refusals."""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.overrides import TorchFunctionMode

from isegprobe.cache import CachedDataset
from isegprobe.cache.extract import ExtractionRequest, extract
from isegprobe.commands.evaluate import evaluate
from isegprobe.config_loading import config_to_dict, load_train_config
from isegprobe.data import create_dataset
from isegprobe.errors import UserError
from isegprobe.featurizers import create_featurizer
from isegprobe.featurizers import factory as featurizer_factory
from isegprobe.inference import evaluation_jobs, runner
from isegprobe.inference.clicker import Click, Clicker
from isegprobe.inference.evaluation import WholeImage, evaluate_objects
from isegprobe.inference.metrics import iou
from isegprobe.inference.predictor import (
    PredictionInput,
    Predictor,
    WorkingView,
    mirror_view,
    to_original,
    to_working,
)
from isegprobe.inference.runner import EvaluationRequest, replay_objects, run_evaluation
from isegprobe.inference.tasks import ObjectTask, cached_tasks
from isegprobe.inference.visuals import strip_clicks
from isegprobe.inference.zoom_in import ZoomIn, box_iou, object_box
from isegprobe.model import ISProbe
from isegprobe.training import train
from isegprobe.training.checkpoint import load_probe, save_checkpoint
from isegprobe.upsamplers import create_upsampler

FEATURIZER = "vit_small_patch14_dinov2"
SIZE = 56
CLICKS = 4


def mirror_click(click: Click, width: int) -> Click:
    """The same click on the horizontally flipped image, in original pixels."""
    return Click(click.y, width - 1 - click.x, click.is_positive)


def extraction(root: Path, out: Path, weights: str = "random") -> Path:
    """A store of the images at `root`, as `extract-features` makes it (random weights warn: they are meant here)."""
    request = ExtractionRequest(
        featurizer=FEATURIZER,
        weights=weights,
        dataset="grabcut",
        root=str(root),
        split="test",
        size=SIZE,
        views="identity,hflip",
        out=str(out),
        workers=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return extract(request).path


@pytest.fixture(scope="module")
def three_images(grabcut_root: Path, tmp_path_factory) -> Path:
    """conftest's `grabcut_three` (one .bmp, one .JPG, one .jpg real GrabCut image), made once for the module."""
    root = tmp_path_factory.mktemp("grabcut") / "GrabCut3"
    (root / "data_GT").mkdir(parents=True)
    (root / "boundary_GT").mkdir()
    images = sorted((grabcut_root / "data_GT").iterdir())
    for suffix in (".bmp", ".JPG", ".jpg"):
        image = next(path for path in images if path.suffix == suffix)
        shutil.copy(image, root / "data_GT" / image.name)
        shutil.copy(grabcut_root / "boundary_GT" / f"{image.stem}.bmp", root / "boundary_GT" / f"{image.stem}.bmp")
    return root


@pytest.fixture(scope="module")
def store(three_images: Path, tmp_path_factory) -> Path:
    return extraction(three_images, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def featurizer():
    """The stores' featurizer, built once: seeded random weights, so every build is the same module."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_featurizer(FEATURIZER, "random")


@pytest.fixture()
def built_once(featurizer, monkeypatch):
    """Let the evaluation rebuild the featurizer from the checkpoint's provenance without paying for it again."""

    def create(name: str, weights: str, normalization: str):
        assert (name, weights, normalization) == (FEATURIZER, "random", "model")
        return featurizer

    monkeypatch.setattr(featurizer_factory, "create_featurizer", create)


@pytest.fixture(scope="module")
def trained_run(store: Path, tmp_path_factory) -> Path:
    """The quickstart probe, trained three steps on the cached images."""
    run_dir = tmp_path_factory.mktemp("run")
    config = load_train_config("quickstart", ["schedule.max_iters=3", "data.batch_size=2", "model.head.width=16"])
    train(config, CachedDataset(store), run_dir, device="cpu", progress=False)
    return run_dir


def untrained_checkpoint(store: Path, run_dir: Path, overrides: list[str]) -> Path:
    """A probe built from a config and saved as training would save it, with the store's provenance."""
    cached = CachedDataset(store)
    config = load_train_config("quickstart", ["model.head.width=16", *overrides])
    torch.manual_seed(1)
    probe = ISProbe(config.model, cached.store.attrs["featurizer"]["dim"], cached.provenance["patch_size"])
    metadata = {
        "config": config_to_dict(config),
        "model": probe.dims(),
        "step": 0,
        "featurizer_provenance": cached.provenance,
        "preprocessing": cached.preprocessing,
    }
    save_checkpoint(run_dir, "last", probe, metadata)
    return run_dir / "last.safetensors"


def cli(*args: str):
    return CliRunner().invoke(evaluate, [*args, "--device", "cpu"], catch_exceptions=False)


def test_cli_from_the_cache_writes_the_papers_numbers(store, trained_run, three_images, tmp_path, monkeypatch):
    def no_featurizer(*args, **kwargs):
        raise AssertionError("the featurizer must not be loaded to evaluate from the cache")

    monkeypatch.setattr(featurizer_factory, "create_featurizer", no_featurizer)
    out = tmp_path / "results"
    result = cli(
        "--checkpoint", str(trained_run), "--store", str(store), "--max-clicks", str(CLICKS),
        "--batch-size", "2", "--vis-preds", "1", "--save-feats", "2", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("| Dataset")))
    assert [cell.strip() for cell in lines[header].split("|")[1:-1]] == [
        "Dataset", "NoC@85", "NoC@90", "NoF@85", "NoF@90", "IoU@1", "SPC, s", "SPC loop, s"
    ]  # fmt: skip
    assert lines[header + 2].startswith("| grabcut |")
    total = 3 * CLICKS  # the bar counts clicks, every object's CLICKS
    assert f"grabcut:   0%|          | 0/{total} [" in result.stderr, "the objects' total is known before the first"
    assert f"grabcut: 100%|██████████| {total}/{total} [" in result.stderr and "objects=3/3" in result.stderr
    assert f"probe: {trained_run.resolve()}/" in result.stderr, "it names the checkpoint it loaded"

    document = json.loads((out / "results.json").read_text())
    summary = document["datasets"]["grabcut"]
    assert document["max_clicks"] == CLICKS and document["zoom_in"] is False and document["flip"] is False
    assert (document["upsampler"], document["fusion"]) == ("identity", "after_backbone")
    assert summary["num_instances"] == 3 and summary["complete"] is True
    assert len(summary["mIoU@k"]) == CLICKS
    assert summary["sec_per_click"] > 0

    source = create_dataset("grabcut", three_images, "test")
    ious = np.load(out / "ious.npz")
    assert list(ious["grabcut/ids"]) == list(source.ids())
    curves = ious["grabcut/ious"]
    assert curves.shape == (3, CLICKS) and curves.dtype == np.float32
    np.testing.assert_allclose(summary["mIoU@k"], curves.mean(axis=0), rtol=1e-6)
    for threshold in (85, 90):
        reached = curves >= np.float32(threshold / 100)
        nocs = np.where(reached.any(axis=1), reached.argmax(axis=1) + 1, CLICKS)
        assert summary[f"NoC@{threshold}"] == pytest.approx(nocs.mean())
        assert summary[f"NoF@{threshold}"] == int((nocs == CLICKS).sum())
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("dataset,num_instances,NoC@80,NoC@85,NoC@90")
    assert csv_lines[1].startswith("grabcut,3,")

    (picture_path,) = (out / "vis" / "grabcut").glob("*.png")
    picture = cv2.imread(str(picture_path))
    height, width = source[0].image.shape[:2]
    panels = len(strip_clicks(CLICKS))
    assert picture.shape[0] > height and panels * width < picture.shape[1] < panels * (width + 20), picture.shape
    saved = sorted((out / "feats" / "grabcut").glob("*.npz"))
    assert [path.stem for path in saved] == list(source.ids())[:2]
    features = np.load(saved[0])
    cached = CachedDataset(store, views=["identity"])[0]
    assert features["lowres"].dtype == np.float16 and features["upsampled"].dtype == np.float16
    np.testing.assert_array_equal(features["lowres"], cached["features"].numpy())
    assert features["upsampled"].shape[0] == features["lowres"].shape[0]
    assert features["image"].shape == (SIZE, SIZE, 3)


def test_both_clickers_give_the_same_curves_from_the_cli(store, trained_run, tmp_path):
    curves = {}
    for clicker in ("opencv", "tensor"):
        out = tmp_path / clicker
        result = cli(
            "--checkpoint", str(trained_run), "--store", str(store), "--max-clicks", str(CLICKS),
            "--batch-size", "2", "--clicker", clicker, "--out", str(out),
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        curves[clicker] = np.load(out / "ious.npz")["grabcut/ious"]
    np.testing.assert_array_equal(curves["opencv"], curves["tensor"])


@pytest.mark.parametrize("options", [["--flip"], ["--zoom-in", "--flip"]], ids=["flip", "zoom-in+flip"])
def test_flip_and_zoom_in_paths_run(store, trained_run, tmp_path, options, built_once):
    out = tmp_path / "results"
    result = cli(
        "--checkpoint", str(trained_run), "--store", str(store), "--max-clicks", "3", "--out", str(out), *options
    )
    assert result.exit_code == 0, result.output
    document = json.loads((out / "results.json").read_text())
    assert document["flip"] is True and document["zoom_in"] == ("--zoom-in" in options)
    assert np.load(out / "ious.npz")["grabcut/ious"].shape == (3, 3)


class RecordingFraming:
    """Wraps a framing and keeps what the evaluation gave it and got from it."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.clicks: list[list[Click]] = []
        self.probs: list[np.ndarray] = []

    def inputs(self, clicks):
        self.clicks.append(list(clicks))
        return self.inner.inputs(clicks)

    def to_original(self, probs):
        original = self.inner.to_original(probs)
        self.probs.append(original.numpy().copy())
        return original


class ClickDisks:
    """A predictor that paints a disk around each positive click: predictions that follow the clicks, for zooming."""

    device = torch.device("cpu")

    def probabilities(self, inputs):
        probs = torch.full((len(inputs), SIZE, SIZE), 0.25)
        rows, cols = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
        for i, item in enumerate(inputs):
            for click in item.clicks:
                y, x, positive = to_working(click, item.view)
                if positive:
                    probs[i][(rows - y) ** 2 + (cols - x) ** 2 <= 36] = 0.75
        return probs


@pytest.mark.parametrize(
    ("overrides", "exact", "research"),
    [([], False, False), ([], True, True), (["model.research_precision=true"], False, True)],
    ids=["cache protocol", "research protocol", "probe trained in research precision"],
)
def test_the_featurizer_runs_as_the_research_code_loads_it_under_its_protocol_or_as_the_probe_trained(
    store, tmp_path, overrides, exact, research
):
    probe, metadata = load_probe(untrained_checkpoint(store, tmp_path, overrides))
    featurizer = runner.checkpoint_featurizer(metadata)
    preprocessing = metadata["preprocessing"]
    Predictor(probe, preprocessing["mean"], preprocessing["std"], torch.device("cpu"), featurizer, exact)
    assert featurizer.research_precision is research


@pytest.mark.parametrize("clicker", ["opencv", "tensor"])
@pytest.mark.parametrize("zoom", [False, True], ids=["whole-image, probe", "zoom-in, click disks"])
def test_clicks_are_a_plain_clicker_replayed_on_the_predictions(store, three_images, tmp_path, zoom, clicker):
    if zoom:
        predictor = ClickDisks()
    else:
        probe, metadata = load_probe(untrained_checkpoint(store, tmp_path, []))
        preprocessing = metadata["preprocessing"]
        predictor = Predictor(probe, preprocessing["mean"], preprocessing["std"], torch.device("cpu"))
    recorded: dict[str, RecordingFraming] = {}

    def framing(task):
        inner = ZoomIn(task.image, SIZE, min_crop=60) if zoom else WholeImage.of_task(task, "cpu")
        return recorded.setdefault(task.id, RecordingFraming(inner))

    tasks = list(cached_tasks(str(store), create_dataset("grabcut", three_images, "test"), flip=False))
    results = []
    evaluate_objects(
        predictor,
        iter(tasks),
        5,
        batch_size=2,
        on_result=results.append,
        framing=framing,
        keep_masks_at=(1, 3),
        clicker=clicker,
    )

    assert [result.id for result in results] == [task.id for task in tasks]
    for task, result in zip(tasks, results, strict=True):
        record = recorded[task.id]
        replay = Clicker(task.gt, task.ignore)
        expected = [replay.next_click(None)]
        for probs in record.probs[:-1]:
            expected.append(replay.next_click(probs > 0.5))
        assert result.clicks == expected
        assert record.clicks == [expected[: k + 1] for k in range(5)]
        replayed_ious = [iou(task.gt, probs > 0.5, task.ignore) for probs in record.probs]
        np.testing.assert_array_equal(result.ious, np.float32(replayed_ious))
        np.testing.assert_array_equal(result.final_probs, record.probs[-1])
        assert sorted(result.masks) == [1, 3]
        for count, mask in result.masks.items():
            np.testing.assert_array_equal(mask, record.probs[count - 1] > 0.5)
    if zoom:
        whole = {(0, task.gt.shape[0] - 1, 0, task.gt.shape[1] - 1) for task in tasks}
        assert {framing.inner.box for framing in recorded.values()} - whole, "no object was zoomed in on"


class CopiesToHost(TorchFunctionMode):
    """Counts `.cpu()` calls: on a GPU each is a copy that waits for the device."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += getattr(func, "__name__", "") == "cpu"
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("clicker", ["opencv", "tensor"])
def test_each_click_brings_the_batchs_masks_or_clicks_over_in_one_copy(store, three_images, tmp_path, clicker):
    """One copy from the device per click for the whole batch of objects, not one per object (the masks for OpenCV's
    clicker, the clicks from the tensor clicker, whose IoUs then come over once), then each object's final
    probabilities once."""
    probe, metadata = load_probe(untrained_checkpoint(store, tmp_path, []))
    preprocessing = metadata["preprocessing"]
    predictor = Predictor(probe, preprocessing["mean"], preprocessing["std"], torch.device("cpu"))
    tasks = list(cached_tasks(str(store), create_dataset("grabcut", three_images, "test"), flip=False))
    with CopiesToHost() as copies:
        evaluate_objects(predictor, iter(tasks), 4, batch_size=len(tasks), clicker=clicker)
    assert len(tasks) == 3 and copies.count == 4 + (clicker == "tensor") + len(tasks)


def test_flip_averages_logits_before_the_sigmoid(store, three_images, tmp_path):
    probe, metadata = load_probe(untrained_checkpoint(store, tmp_path, []))
    with torch.no_grad():  # logits far from 0 (not past float32 sigmoid's saturation), where the two averages part
        probe.head.logit.weight.mul_(60)
    preprocessing = metadata["preprocessing"]
    predictor = Predictor(probe, preprocessing["mean"], preprocessing["std"], torch.device("cpu"))
    task = next(cached_tasks(str(store), create_dataset("grabcut", three_images, "test"), flip=True))
    width = task.gt.shape[1]
    clicks = [Click(150, 200, True), Click(20, width - 30, False)]
    prev = torch.rand(SIZE, SIZE)
    both = predictor.probabilities([PredictionInput(task.view, task.flip_view, clicks, prev)])[0]
    plain = predictor.probabilities([PredictionInput(task.view, None, clicks, prev)])[0]
    mirrored_clicks = [mirror_click(click, width) for click in clicks]
    mirrored = predictor.probabilities([PredictionInput(task.flip_view, None, mirrored_clicks, prev.flip(-1))])[0]
    logits = 0.5 * (torch.logit(plain.double()) + torch.logit(mirrored.double()).flip(-1))
    torch.testing.assert_close(both.double(), torch.sigmoid(logits), atol=2e-4, rtol=0)
    assert (both - 0.5 * (plain + mirrored.flip(-1))).abs().max() > 0.05  # not the average of probabilities


def test_ctrl_c_leaves_the_finished_objects_on_disk(store, trained_run, tmp_path):
    out = tmp_path / "results"
    on_disk_at_second = []

    def interrupt(dataset, result):
        if len(on_disk_at_second) == 0 and (out / "ious.npz").exists():
            on_disk_at_second.append(list(np.load(out / "ious.npz")[f"{dataset}/ids"]))
            raise KeyboardInterrupt

    request = EvaluationRequest(
        checkpoint=str(trained_run), out_dir=str(out), stores=[str(store)], max_clicks=3, batch_size=1
    )
    with pytest.raises(KeyboardInterrupt):
        run_evaluation(request, on_result=interrupt)

    first, second, third = CachedDataset(store).item_ids
    assert on_disk_at_second == [[first]]  # written when the first batch (one object) finished
    document = json.loads((out / "results.json").read_text())
    assert document["datasets"]["grabcut"]["num_instances"] == 2
    assert document["datasets"]["grabcut"]["complete"] is False
    interrupted = np.load(out / "ious.npz")
    assert list(interrupted["grabcut/ids"]) == [first, second]

    # The same evaluation again evaluates only the object it did not finish, and ends as an uninterrupted run does.
    evaluated_again = []
    run_evaluation(request, on_result=lambda dataset, result: evaluated_again.append(result.id))
    assert evaluated_again == [third]
    resumed = np.load(out / "ious.npz")
    np.testing.assert_array_equal(resumed["grabcut/ious"][:2], interrupted["grabcut/ious"])
    uninterrupted = tmp_path / "uninterrupted"
    run_evaluation(dataclasses.replace(request, out_dir=str(uninterrupted)))
    summaries = [
        json.loads((folder / "results.json").read_text())["datasets"]["grabcut"] for folder in (out, uninterrupted)
    ]
    # The speed covers the clicks timed in both parts: the first object's 3 (its batch finished before the
    # interruption) and the third's 3; the uninterrupted run timed all 9.
    assert (summaries[0]["clicks_timed"], summaries[1]["clicks_timed"]) == (6, 9)
    for summary in summaries:
        del summary["sec_per_click"], summary["sec_per_click_loop"], summary["clicks_timed"]  # timing differs
    assert summaries[0] == summaries[1] and summaries[0]["complete"] is True
    np.testing.assert_array_equal(resumed["grabcut/ious"], np.load(uninterrupted / "ious.npz")["grabcut/ious"])


def made_again_once(arguments: list[str], made: Path, expected: Path, saying: str) -> None:
    """`made`, a file an evaluation in --out wrote for one of its first objects, deleted: the same command on the
    finished evaluation makes it again as an uninterrupted run made it (`expected`), saying so (`grabcut: SAYING`),
    and run once more makes nothing."""
    made.unlink()
    again = cli(*arguments)
    assert f"grabcut: {saying}" in again.stderr, "a finished evaluation makes what it lacks"
    assert made.read_bytes() == expected.read_bytes()
    verb = saying.split()[0]
    assert verb not in cli(*arguments).stderr, "nor anything twice"


def test_vis_preds_on_a_resumed_evaluation_draws_the_first_objects_an_earlier_run_finished(
    store, trained_run, tmp_path
):
    """--vis-preds N draws a dataset's first N objects: those an earlier run finished without drawing are evaluated
    again and drawn, as one uninterrupted run draws them (only the objects evaluated from then on were drawn)."""
    out, whole = tmp_path / "results", tmp_path / "whole"
    common = ["--checkpoint", str(trained_run), "--store", str(store), "--max-clicks", "3", "--batch-size", "1"]
    assert cli(*common, "--max-objects", "2", "--out", str(out)).exit_code == 0
    curves = np.load(out / "ious.npz")["grabcut/ious"].copy()
    resumed = cli(*common, "--vis-preds", "3", "--out", str(out))
    assert resumed.exit_code == 0, resumed.output
    assert "grabcut: drawing 2 object(s) an earlier run finished (--vis-preds)" in resumed.stderr
    assert cli(*common, "--vis-preds", "3", "--out", str(whole)).exit_code == 0
    drawn, expected = (sorted((folder / "vis" / "grabcut").iterdir()) for folder in (out, whole))
    assert [path.name for path in drawn] == [path.name for path in expected] and len(drawn) == 3
    assert all(one.read_bytes() == other.read_bytes() for one, other in zip(drawn, expected, strict=True))
    np.testing.assert_array_equal(np.load(out / "ious.npz")["grabcut/ious"][:2], curves)
    made_again_once([*common, "--vis-preds", "3", "--out", str(out)], drawn[0], expected[0], "drawing 1 object(s)")


def test_save_feats_on_a_resumed_evaluation_keeps_the_first_objects_of_the_dataset(store, trained_run, tmp_path):
    """--save-feats N keeps a dataset's first N objects' features: a resumed or finished evaluation saves those an
    earlier run finished without them (a resumed one saved the first N of the objects still to do, N more, and a
    finished one nothing)."""
    out, whole = tmp_path / "results", tmp_path / "whole"
    common = ["--checkpoint", str(trained_run), "--store", str(store), "--max-clicks", "3", "--batch-size", "1"]
    assert cli(*common, "--max-objects", "1", "--save-feats", "1", "--out", str(out)).exit_code == 0
    assert cli(*common, "--max-objects", "2", "--out", str(out)).exit_code == 0
    resumed = cli(*common, "--save-feats", "2", "--out", str(out))
    assert resumed.exit_code == 0, resumed.output
    assert "grabcut: saving the features of 1 object(s) an earlier run finished" in resumed.stderr
    assert cli(*common, "--save-feats", "2", "--out", str(whole)).exit_code == 0
    saved, expected = (sorted((folder / "feats" / "grabcut").iterdir()) for folder in (out, whole))
    assert [path.name for path in saved] == [path.name for path in expected] and len(saved) == 2
    for one, other in zip(saved, expected, strict=True):
        with np.load(one) as first, np.load(other) as second:
            assert all(np.array_equal(first[key], second[key]) for key in ("lowres", "upsampled", "image"))
    made_again_once(
        [*common, "--save-feats", "2", "--out", str(out)], saved[0], expected[0], "saving the features of 1 object(s)"
    )


def test_max_objects_stops_each_dataset_as_an_interruption_does_and_the_same_command_goes_on(
    store, trained_run, tmp_path
):
    out = tmp_path / "results"
    common = ["--checkpoint", str(trained_run), "--store", str(store), "--max-clicks", "3", "--batch-size", "1"]
    first = cli(*common, "--max-objects", "1", "--save-feats", "3", "--out", str(out))
    assert first.exit_code == 0, first.output
    assert "grabcut: stopped at 1 of 3 objects (--max-objects)" in first.stderr
    assert len(list((out / "feats" / "grabcut").iterdir())) == 1, "no features saved of an object left for later"
    document = json.loads((out / "results.json").read_text())
    assert document["datasets"]["grabcut"]["num_instances"] == 1
    assert document["datasets"]["grabcut"]["complete"] is False
    rest = cli(*common, "--out", str(out))
    assert rest.exit_code == 0, rest.output
    whole = cli(*common, "--out", str(tmp_path / "whole"))
    assert whole.exit_code == 0, whole.output
    resumed, uninterrupted = (np.load(folder / "ious.npz") for folder in (out, tmp_path / "whole"))
    np.testing.assert_array_equal(resumed["grabcut/ious"], uninterrupted["grabcut/ious"])
    assert json.loads((out / "results.json").read_text())["datasets"]["grabcut"]["complete"] is True


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--datasets", "berkeley"], "holds grabcut test, but --datasets berkeley --split test ask for other data"),
        (["--split", "train"], "holds grabcut test, but --datasets grabcut --split train ask for other data"),
        (["--datasets", "grabcut,,grabcut"], "--datasets 'grabcut,,grabcut': expected dataset names separated by"),
        (["--store-root", "elsewhere"], "--store and --store-root elsewhere: --store names the stores to read"),
    ],
)
def test_datasets_and_split_given_beside_a_store_must_be_what_it_holds(store, trained_run, tmp_path, options, message):
    """`--datasets grabcut --store <builtin train>` evaluated the store's training images under the name builtin,
    saying nothing; an empty name in --datasets looked for a store named `--test`."""
    common = ["--checkpoint", str(trained_run), "--store", str(store), "--max-clicks", "2", "--out", str(tmp_path)]
    result = cli(*common, *options)
    assert result.exit_code == 1 and message in result.output, result.output
    assert not (tmp_path / "results.json").exists()
    assert cli(*common, "--datasets", "grabcut", "--split", "test").exit_code == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--datasets", "grabcutt"], "unknown dataset 'grabcutt'; known: ade20k"),
        (["--datasets", "grabcut", "--split", "tset"], "--split: grabcut has splits test, not 'tset'"),
        (["--datasets", "berkeley"], "--store-root: no store"),
    ],
)
def test_a_misspelled_dataset_or_split_beside_a_store_root_is_said_to_be_one(
    store, trained_run, tmp_path, options, message
):
    """They were reported as a store to extract ("no store ...-grabcutt-test-56.zarr")."""
    refused = cli("--checkpoint", str(trained_run), "--store-root", str(store.parent), *options, "--out", str(tmp_path))
    assert refused.exit_code == 1 and message in refused.output, refused.output


def test_a_store_root_that_lacks_the_store_names_the_extraction_that_makes_it(store, trained_run, tmp_path):
    """It said "run `isegprobe extract-features` first", leaving the featurizer, weights and size the store must have
    to be guessed; a store given as --store-root was looked for inside itself."""
    common = ["--checkpoint", str(trained_run), "--max-clicks", "1", "--out", str(tmp_path / "results")]
    missing = cli(*common, "--store-root", str(store.parent), "--datasets", "berkeley")
    assert missing.exit_code == 1, missing.output
    assert (
        f"; extract it for this probe with `isegprobe extract-features --featurizer {FEATURIZER} --weights random "
        f"--dataset berkeley --split test --size {SIZE} --out {store.parent}`"
    ) in " ".join(missing.output.split())
    itself = cli(*common, "--store-root", str(store))
    assert itself.exit_code == 1
    assert (
        f"a feature store itself, where the folder of stores is asked for; give it with --store {store}, or its "
        in (" ".join(itself.output.split()))
    )
    assert not (tmp_path / "results").exists()


def test_dataset_names_are_read_in_any_case_as_everywhere_else(store, trained_run, tmp_path):
    """`--datasets GrabCut` looked for a store named ...-GrabCut-test-56.zarr ("run extract-features first")."""
    out = tmp_path / "results"
    common = ["--checkpoint", str(trained_run), "--store-root", str(store.parent), "--max-clicks", "1"]
    evaluated = cli(*common, "--datasets", "GrabCut", "--max-objects", "1", "--out", str(out))
    assert evaluated.exit_code == 0, evaluated.output
    assert list(json.loads((out / "results.json").read_text())["datasets"]) == ["grabcut"]


def test_results_of_another_evaluation_are_never_replaced_without_overwrite(store, trained_run, tmp_path):
    out = tmp_path / "results"
    common = ["--checkpoint", str(trained_run), "--store", str(store), "--batch-size", "3", "--out", str(out)]
    assert cli(*common, "--max-clicks", "2", "--vis-preds", "1", "--save-feats", "1").exit_code == 0
    before = (out / "ious.npz").read_bytes()
    evaluated_again = []
    request = EvaluationRequest(checkpoint=str(trained_run), out_dir=str(out), stores=[str(store)], max_clicks=2)
    run_evaluation(request, on_result=lambda dataset, result: evaluated_again.append(result.id))
    assert evaluated_again == [], "a finished evaluation run again is read back, not redone"
    assert (out / "ious.npz").read_bytes() == before

    refused = cli(*common, "--max-clicks", "3")
    assert refused.exit_code == 1
    assert (
        "holds the results of another evaluation" in refused.output and "max_clicks: 2 there, 3 now" in refused.output
    )
    assert (out / "ious.npz").read_bytes() == before
    replaced = cli(*common, "--max-clicks", "3", "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert np.load(out / "ious.npz")["grabcut/ious"].shape == (3, 3)
    assert not (out / "vis").exists() and not (out / "feats").exists(), "the replaced evaluation's pictures went too"

    (out / "ious.npz").write_bytes((out / "ious.npz").read_bytes()[:300])
    cut = cli(*common, "--max-clicks", "3")
    assert cut.exit_code == 1 and "ious.npz: unreadable or short of the curves" in cut.output, cut.output
    (out / "ious.npz").unlink()
    lost = cli(*common, "--max-clicks", "3")
    assert lost.exit_code == 1 and "ious.npz: unreadable or short of the curves" in lost.output


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        # reports read `complete` too, so it is refused as they refuse it, before the resume looks
        ("complete", None, "not an evaluation's results.json (grabcut/complete is None, not true or false)"),
        ("clicks_timed", "many", "cannot resume from it (clicks_timed is 'many', not a count of 0 or more)"),
        ("sec_per_click", "fast", "cannot resume from it (sec_per_click is 'fast', not a number of seconds)"),
    ],
)
def test_a_results_json_a_resume_cannot_continue_is_refused_by_name(store, trained_run, tmp_path, key, value, message):
    """A hand-edited summary that reports still read (they do not use these keys) stopped a resume in a traceback,
    after one more batch where the seconds per click were text."""
    out = tmp_path / "results"
    common = ["--checkpoint", str(trained_run), "--store", str(store), "--max-clicks", "2", "--out", str(out)]
    assert cli(*common, "--max-objects", "1").exit_code == 0
    document = json.loads((out / "results.json").read_text())
    document["datasets"]["grabcut"][key] = value
    (out / "results.json").write_text(json.dumps(document))
    before = (out / "ious.npz").read_bytes()
    resumed = cli(*common)
    assert resumed.exit_code == 1, resumed.output
    assert f"results.json: {message}" in resumed.output and "pass --overwrite" in resumed.output
    assert "Traceback" not in resumed.output and (out / "ious.npz").read_bytes() == before


def test_an_overwrite_that_stops_before_its_first_results_keeps_the_earlier_pictures(
    store, trained_run, tmp_path, monkeypatch
):
    """--overwrite deleted the earlier evaluation's pictures and features before evaluating; one that then stopped
    (an unreadable image in its first batch) left the earlier results.json without them."""
    out = tmp_path / "results"
    common = ["--checkpoint", str(trained_run), "--store", str(store), "--out", str(out)]
    assert cli(*common, "--max-clicks", "2", "--vis-preds", "2", "--save-feats", "1").exit_code == 0

    def files() -> dict[str, bytes]:
        return {str(path.relative_to(out)): path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file()}

    earlier = files()
    assert any(name.startswith("vis/") for name in earlier) and any(name.startswith("feats/") for name in earlier)

    def unreadable(*arguments: object) -> Iterator[ObjectTask]:
        raise UserError("an unreadable image")
        yield

    request = EvaluationRequest(
        checkpoint=str(trained_run), out_dir=str(out), stores=[str(store)], max_clicks=3, vis_preds=1, overwrite=True
    )
    with monkeypatch.context() as patched:
        patched.setattr(evaluation_jobs, "cached_tasks", unreadable)
        with pytest.raises(UserError, match="an unreadable image"):
            run_evaluation(request)
    assert files() == earlier, "the earlier evaluation is whole until the new one writes results"
    assert cli(*common, "--max-clicks", "3", "--vis-preds", "1", "--overwrite").exit_code == 0
    replaced = files()
    assert len([name for name in replaced if name.startswith("vis/")]) == 1 and not (out / "feats").exists()
    assert not list(out.glob(".*.replaced")), "the earlier pictures went once the new results were written"


def test_curves_of_another_evaluation_beside_results_json_are_refused_on_resume(store, trained_run, tmp_path):
    """An ious.npz copied from another evaluation (or left by one whose results.json was replaced) was resumed from:
    the report then printed that evaluation's curves as this one's numbers, exit 0."""
    common = ["--checkpoint", str(trained_run), "--store", str(store)]
    out, other = tmp_path / "results", tmp_path / "other"
    assert cli(*common, "--max-clicks", "2", "--out", str(out)).exit_code == 0
    assert cli(*common, "--max-clicks", "3", "--out", str(other)).exit_code == 0
    assert cli(*common, "--max-clicks", "2", "--out", str(out)).exit_code == 0, "its own curves resume"
    (out / "ious.npz").write_bytes((other / "ious.npz").read_bytes())
    longer = cli(*common, "--max-clicks", "2", "--out", str(out))
    assert longer.exit_code == 1 and "Traceback" not in longer.output, longer.output
    assert (
        "ious.npz holds grabcut curves of shape (3, 3) for 3 ids, where results.json counts 3 objects of 2 clicks"
        in (" ".join(longer.output.split()))
    )
    with np.load(other / "ious.npz") as arrays:
        swapped = {key: arrays[key] for key in arrays.files}
    swapped["grabcut/ious"] = swapped["grabcut/ious"][:, :2][::-1].copy()
    swapped["grabcut/ious"][0] = 1 - swapped["grabcut/ious"][0]
    np.savez(out / "ious.npz", **swapped)
    other_numbers = cli(*common, "--max-clicks", "2", "--out", str(out))
    assert other_numbers.exit_code == 1, other_numbers.output
    assert "ious.npz's grabcut curves give other" in other_numbers.output
    assert "pass --overwrite" in other_numbers.output


def test_refuses_a_store_from_other_weights(store, trained_run, three_images, tmp_path, featurizer):
    weights = tmp_path / "other.pth"
    torch.save(featurizer.model.state_dict(), weights)
    other = extraction(three_images, tmp_path / "cache", weights=str(weights))
    result = cli("--checkpoint", str(trained_run), "--store", str(other), "--out", str(tmp_path / "results"))
    assert result.exit_code == 1
    assert "another featurizer" in result.output and "weights_sha256" in result.output
    assert not (tmp_path / "results" / "results.json").exists()


def test_early_fusion_runs_the_featurizer_on_the_store_images_as_online(store, three_images, tmp_path, built_once):
    """As in training, an early-fusion probe evaluated from a store runs its featurizer on the store's images: the
    same curves as --online, which computes the same working views from the dataset."""
    checkpoint = untrained_checkpoint(store, tmp_path, ["model.fusion=before_backbone"])
    cached, online = tmp_path / "cached", tmp_path / "online"
    from_store = cli("--checkpoint", str(checkpoint), "--store", str(store), "--max-clicks", "2", "--out", str(cached))
    assert from_store.exit_code == 0, from_store.output
    from_images = cli(
        "--checkpoint", str(checkpoint), "--online", "--datasets", "grabcut", "--root", str(three_images),
        "--max-clicks", "2", "--out", str(online),
    )  # fmt: skip
    assert from_images.exit_code == 0, from_images.output
    assert json.loads((online / "results.json").read_text())["datasets"]["grabcut"]["num_instances"] == 3
    curves = [np.load(out / "ious.npz") for out in (cached, online)]
    np.testing.assert_array_equal(curves[0]["grabcut/ids"], curves[1]["grabcut/ids"])
    np.testing.assert_array_equal(curves[0]["grabcut/ious"], curves[1]["grabcut/ious"])


def blank_image(height: int, width: int) -> np.ndarray:
    return np.zeros((height, width, 3), np.uint8)


def test_zoom_in_boxes_follow_ritm_rules():
    zoom = ZoomIn(blank_image(300, 400), SIZE)
    first = [Click(120, 230, True)]
    zoom.inputs(first)
    assert zoom.box == (0, 299, 0, 399)  # empty previous mask: the whole image

    zoom.prev_probs[100:150, 200:260] = 1.0
    # box rows 100..149 x1.4 -> 70 < 200 -> 200 about 124.5: round(24.5) = 24 and round(224.5) = 224 (half to even);
    # columns 200..259 -> 200 about 229.5: round(129.5) = 130, round(329.5) = 330
    zoom.inputs(first)
    assert zoom.box == (24, 224, 130, 330)
    assert box_iou((0, 299, 0, 399), (24, 224, 130, 330)) < 0.5

    zoom.inputs([*first, Click(10, 10, False)])  # negative clicks never move the box
    assert zoom.box == (24, 224, 130, 330)
    zoom.prev_probs[150:155, 200:260] = 1.0
    assert object_box((zoom.prev_probs > 0.5).numpy(), first, 1.4, 200) == (27, 227, 130, 330)
    zoom.inputs(first)  # IoU 198/204 with the current box: keep it
    assert zoom.box == (24, 224, 130, 330)

    zoom.inputs([*first, Click(224, 230, True)])  # RITM counts the box's last row as outside: a new box
    assert zoom.box == (62, 262, 130, 330)  # rows 100..224 -> 200 rows about 162


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
@pytest.mark.parametrize("axis", [0, 1], ids=["rows", "columns"])
def test_zoom_in_crop_and_uncrop_are_exact_inverses(resize, axis):
    height, width = 300, 400
    grids = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    ramp = grids[axis]  # each pixel's own row (or column) number
    zoom = ZoomIn(blank_image(height, width), 112, resize, recompute_iou=0.0)
    zoom.prev_probs = ramp.clone()
    zoom.box = (40, 239, 100, 349)  # 200 x 250; kept, since the positive click is inside
    clicks = [Click(123, 200, True), Click(60, 300, False)]
    framed = zoom.inputs(clicks)
    assert zoom.box == (40, 239, 100, 349)

    # The cropped previous map holds original coordinates, so it says where each working position came from.
    for click, local in zip(clicks, framed.clicks, strict=True):
        y, x, _ = to_working(local, framed.view)
        sampled = torch.nn.functional.grid_sample(
            framed.prev_probs[None, None],
            torch.tensor([[[[2 * (x + 0.5) / 112 - 1, 2 * (y + 0.5) / 112 - 1]]]]),
            align_corners=False,
        )
        assert sampled.item() == pytest.approx((click.y, click.x)[axis], abs=1e-3)

    back = zoom.to_original(framed.prev_probs)
    inner = (slice(42, 238), slice(102, 348))  # linear ramps survive bilinear resampling away from the crop's edge
    torch.testing.assert_close(back[inner], ramp[inner], atol=1e-3, rtol=0)
    assert back[:40].abs().max() == 0 and back[:, 350:].abs().max() == 0


def test_mirrored_view_mirrors_clicks_exactly():
    view = WorkingView(None, torch.zeros(3, 112, 112, dtype=torch.uint8), (16, 0, 96, 112), (200, 280))
    mirrored = mirror_view(view)
    for click in (Click(0, 0, True), Click(57, 199, False), Click(199, 279, True)):
        y, x, _ = to_working(click, view)
        my, mx, _ = to_working(mirror_click(click, 280), mirrored)
        assert (my, mx) == pytest.approx((y, 111 - x))
    probs = torch.rand(112, 112)
    torch.testing.assert_close(to_original(probs.flip(-1), mirrored).flip(-1), to_original(probs, view))


# --- iSegProbe's protocol ---------------------------------------------------------------------------------------


def test_ritm_zoom_in_geometry_maps_crops_and_clicks_as_ritm_does():
    """RITM's ZoomIn (iSegProbe's evaluate.py): the crop resized with the corner pixels aligned and kept in float,
    clicks scaled by the size ratio (row * S / crop height), and the probabilities put back with corners aligned."""
    height, width, size = 300, 400, 112
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    zoom = ZoomIn(image, size, align_corners=True, recompute_iou=0.0)
    zoom.box = (40, 239, 100, 349)  # 200 x 250
    clicks = [Click(123, 200, True), Click(60, 300, False)]
    framed = zoom.inputs(clicks)
    assert zoom.box == (40, 239, 100, 349)

    # grid_sample with align_corners=True reads crop pixel (i, j) at source (40 + i * 199 / 111, 100 + j * 249 / 111)
    rows = torch.linspace(-1, 1, size)
    grid = torch.stack(torch.meshgrid(rows, rows, indexing="ij")[::-1], dim=-1)[None]
    region = torch.from_numpy(image).permute(2, 0, 1).float()[None, :, 40:240, 100:350] / 255  # RITM's to_tensor
    expected = torch.nn.functional.grid_sample(region, grid, mode="bilinear", align_corners=True)[0]
    assert framed.view.image.dtype == torch.float32, "RITM's crop is never rounded to uint8"
    torch.testing.assert_close(framed.view.image, expected, atol=1e-4, rtol=0)  # float rounding only

    working = [to_working(click, framed.view) for click in framed.clicks]
    assert working == [
        pytest.approx((size * (123 - 40) / 200, size * (200 - 100) / 250, 1)),
        pytest.approx((size * (60 - 40) / 200, size * (300 - 100) / 250, 0)),
    ]
    probs = torch.rand(size, size)
    back = zoom.to_original(probs)
    inside = torch.nn.functional.interpolate(probs[None, None], size=(200, 250), mode="bilinear", align_corners=True)
    torch.testing.assert_close(back[40:240, 100:350], inside[0, 0])
    assert back[:40].abs().max() == 0 and back[:, 350:].abs().max() == 0


@pytest.mark.usefixtures("one_torch_thread")  # as the comparison with the research code ran
def test_ritm_zoom_in_resizes_image_and_previous_probabilities_as_ritms_one_4_channel_tensor():
    """RITM's predictor concatenates to_tensor's image (channel planes contiguous) with the previous probabilities
    and resizes the crop of the four channels in one call; a 3-channel or channels-last resize rounds otherwise."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    zoom = ZoomIn(image, 112, align_corners=True, recompute_iou=0.0)
    zoom.prev_probs = torch.from_numpy(rng.random((300, 400), dtype=np.float32))
    zoom.box = (40, 239, 100, 349)
    framed = zoom.inputs([Click(123, 200, True)])
    to_tensor = torch.from_numpy(image.transpose(2, 0, 1)).contiguous().float().div(255)  # torchvision's to_tensor
    image_nd = torch.cat([to_tensor, zoom.prev_probs[None]])[None, :, 40:240, 100:350]
    expected = torch.nn.functional.interpolate(image_nd, size=(112, 112), mode="bilinear", align_corners=True)[0]
    assert torch.equal(framed.view.image, expected[:3]) and torch.equal(framed.prev_probs, expected[3])


@pytest.mark.parametrize("exact", [True, False], ids=["research protocol", "cache protocol"])
def test_a_view_and_its_mirror_share_one_forward_under_the_research_protocol(store, tmp_path, exact):
    """RITM's AddHorizontalFlip predicts the image and its mirror as one batch of two."""
    probe, metadata = load_probe(untrained_checkpoint(store, tmp_path, []))
    preprocessing = metadata["preprocessing"]
    featurizer = runner.checkpoint_featurizer(metadata)
    predictor = Predictor(probe, preprocessing["mean"], preprocessing["std"], torch.device("cpu"), featurizer, exact)
    image = torch.randint(0, 256, (3, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    view = WorkingView(None, image, (0, 0, SIZE, SIZE), (SIZE, SIZE))
    batches = []
    probe.register_forward_hook(lambda module, args, output: batches.append(len(output)))
    predictor.logits([PredictionInput(view, mirror_view(view), [Click(5, 5, True)], torch.zeros(SIZE, SIZE))])
    assert batches == ([2] if exact else [1, 1])


def test_an_objects_curve_does_not_depend_on_the_objects_beside_it_with_loftup(store, three_images, tmp_path):
    """LoftUp scales its guidance by min and max; in evaluation each object uses its own, as the research code's
    batch of one image (and its mirror) does, so batching objects changes nothing."""
    cached = CachedDataset(store)
    upsampler = create_upsampler("loftup", cached.provenance["dim"])
    with torch.no_grad():
        for tensor in upsampler.parameters():
            tensor.normal_(0, 0.3)
    torch.save(upsampler.state_dict(), tmp_path / "loftup.pth")
    overrides = ["model.upsampler.name=loftup", f"model.upsampler.weights={tmp_path / 'loftup.pth'}"]
    probe, metadata = load_probe(untrained_checkpoint(store, tmp_path, overrides))
    preprocessing = metadata["preprocessing"]
    predictor = Predictor(probe, preprocessing["mean"], preprocessing["std"], torch.device("cpu"))
    source = create_dataset("grabcut", three_images, "test")
    tasks = list(cached_tasks(str(store), source, flip=False))
    dim = tasks[1].view  # photographs span 0..255 in every channel; this one spans less, so ranges differ
    tasks[1].view = WorkingView(dim.features, dim.image // 3 + 40, dim.valid_box, dim.original_size)
    inputs = [
        PredictionInput(task.view, None, [Click(*np.argwhere(task.gt)[0], True)], torch.zeros(SIZE, SIZE))
        for task in tasks
    ]
    together = predictor.probabilities(inputs)
    alone = torch.cat([predictor.probabilities([item]) for item in inputs])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)
    curves = {}
    clicked: dict[int, list[tuple[int, int]]] = {1: [], 3: []}
    for batch_size in (1, 3):
        record = clicked[batch_size].append
        run = evaluate_objects(
            predictor, iter(tasks), 3, batch_size=batch_size, on_click=lambda *call, r=record: r(call)
        )
        curves[batch_size] = np.stack([result.ious for result in run.results])
    np.testing.assert_array_equal(curves[1], curves[3])
    assert clicked == {1: [(1, 1), (2, 1), (3, 1)] * 3, 3: [(1, 3), (2, 3), (3, 3)]}, "progress inside a batch"


def test_the_isegprobe_protocol_fixes_its_settings_and_evaluates_the_last_checkpoint(
    store, three_images, tmp_path, built_once, monkeypatch
):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    untrained_checkpoint(store, run_dir, ["model.align_corners=true"])
    for suffix in (".safetensors", ".json"):  # a best checkpoint beside the last one: the protocol takes the last
        shutil.copy(run_dir / f"last{suffix}", run_dir / f"best{suffix}")
    request = EvaluationRequest(
        checkpoint=str(run_dir), out_dir=str(tmp_path / "out"), datasets=["grabcut"], root=str(three_images),
        protocol="iSegProbe",
    )  # fmt: skip
    deterministic, curves = [], {}

    def evaluated(_, result):
        deterministic.append(torch.are_deterministic_algorithms_enabled())
        curves[result.id] = result.ious

    summaries = run_evaluation(request, evaluated)
    assert deterministic and all(deterministic), "the research code's deterministic kernels while it evaluates"
    assert not torch.are_deterministic_algorithms_enabled(), "and the process's own settings afterwards"
    replayed_under = []

    def recording(*args, **kwargs):
        replayed_under.append(torch.are_deterministic_algorithms_enabled())
        return evaluate_objects(*args, **kwargs)

    monkeypatch.setattr(runner, "evaluate_objects", recording)
    first = next(iter(curves))
    replayed = replay_objects(request, "grabcut", [first])
    assert replayed_under == [True], "plot predictions replays an object under the same kernels"
    assert not torch.are_deterministic_algorithms_enabled()
    assert [result.id for result in replayed] == [first]
    np.testing.assert_array_equal(replayed[0].ious, curves[first])
    document = json.loads((tmp_path / "out" / "results.json").read_text())
    assert document["protocol"] == "iSegProbe"
    assert (document["zoom_in"], document["flip"], document["online"]) == (True, True, True)
    assert (document["max_clicks"], document["threshold"]) == (20, 0.5)
    assert Path(document["checkpoint"]).name == "last.safetensors"
    summary = summaries["grabcut"]
    assert len(summary["mIoU@k"]) == 20, "every object gets all 20 clicks (no early stop), as print_ious does"
    assert summary["sec_per_click_loop"] >= summary["sec_per_click"] > 0

    refused = cli(
        "--checkpoint", str(run_dir), "--protocol", "iSegProbe", "--max-clicks", "5", "--datasets", "grabcut",
        "--root", str(three_images), "--out", str(tmp_path / "refused"),
    )  # fmt: skip
    assert refused.exit_code == 1
    assert "--protocol iSegProbe fixes what these flags change: --max-clicks 5 (it uses 20)" in refused.output
    refused = cli(
        "--checkpoint", str(run_dir), "--protocol", "iSegProbe", "--store", str(store), "--out", str(tmp_path / "r2")
    )
    assert refused.exit_code == 1 and "not --store" in refused.output
    assert not (tmp_path / "refused").exists() and not (tmp_path / "r2").exists()
