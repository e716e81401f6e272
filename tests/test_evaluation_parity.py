"""Today's evaluation loop against the loop as it was before issue 22 (benchmarks/per_object_reference.py): the same
clicks, IoUs and probabilities on real GrabCut objects, whichever way OpenCV computes the clicker's transform."""

from __future__ import annotations

import dataclasses
import importlib.util
from functools import partial
from itertools import islice
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt, uniform_filter

from isegprobe.config_loading import load_train_config
from isegprobe.data import create_dataset
from isegprobe.data.preprocess import normalize_images
from isegprobe.devices import deterministic_arithmetic
from isegprobe.inference.clicker import Clicker
from isegprobe.inference.evaluation import evaluate_objects
from isegprobe.inference.predictor import Predictor
from isegprobe.inference.tasks import online_tasks
from isegprobe.inference.zoom_in import ZoomIn
from isegprobe.model import ISProbe

REPO = Path(__file__).resolve().parents[1]
GRABCUT = REPO.parent / "shared" / "data" / "GrabCut"
SIZE, PATCH, DIM = 112, 14, 16
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load_reference():
    spec = importlib.util.spec_from_file_location(
        "per_object_reference", REPO / "benchmarks" / "per_object_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = load_reference()


@pytest.fixture()
def opencv_threads():
    """Set OpenCV's threads for one test, and put the previous number back."""
    before = cv2.getNumThreads()
    yield cv2.setNumThreads
    cv2.setNumThreads(before)


def grabcut_objects(count: int):
    paths = sorted(GRABCUT.glob("boundary_GT/*.bmp"))
    if not paths:
        pytest.skip(f"GrabCut not found at {GRABCUT}")
    for path in paths[:count]:
        label = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        yield label == 255, label == 128


def predictions(gt: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Masks a probe might give: shrunk, grown, shifted, and with blobs of noise, each with its errors somewhere."""
    as_uint8 = gt.astype(np.uint8)
    kernel = np.ones((25, 25), np.uint8)
    noise = uniform_filter(rng.random(gt.shape), size=31) > 0.52
    return [
        np.zeros_like(gt),
        cv2.erode(as_uint8, kernel).astype(bool),
        cv2.dilate(as_uint8, kernel).astype(bool),
        np.roll(gt, 30, axis=1),
        gt ^ noise,
        gt.copy(),
        np.ones_like(gt),
    ]


def differs_from_exact_transform(threads: int, ipp: bool) -> bool:
    """Whether OpenCV's transform of a 128 x 128 image (2**14 pixels) with a few zeros inside differs anywhere from
    the float32 square root of the exact squared distance, at `threads` OpenCV threads, with IPP on or off."""
    cv2.setNumThreads(threads)
    image = np.ones((128, 128), np.uint8)
    image[[0, -1], :] = image[:, [0, -1]] = 0
    image[[20, 50, 90, 101], [30, 77, 40, 100]] = 0
    squared = np.rint(distance_transform_edt(image) ** 2).astype(np.float32)
    used_ipp = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(ipp)
    try:
        return bool((cv2.distanceTransform(image, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) != np.sqrt(squared)).any())
    finally:
        cv2.ipp.setUseIPP(used_ipp)


def test_opencv_transforms_as_the_clicker_assumes(opencv_threads):
    """OpenCV's own transform gives the exact distances' float32 square roots, on one thread or several; with IPP on
    and one thread it does not (which is why the clicker turns IPP off)."""
    assert not differs_from_exact_transform(threads=2, ipp=False)
    assert not differs_from_exact_transform(threads=1, ipp=False)
    assert not differs_from_exact_transform(threads=2, ipp=True)  # 2**14 pixels on two threads: OpenCV's own
    if cv2.ipp.useIPP():
        assert differs_from_exact_transform(threads=1, ipp=True)


@pytest.mark.parametrize("threads", [2, 1], ids=["OpenCV on 2 threads", "OpenCV on 1 thread"])
def test_clicks_equal_ritms_on_real_masks(threads, opencv_threads):
    """RITM's clicker (whole padded images) against this one (cropped), with OpenCV's own transform in both: on two
    threads RITM's call gets it for these 640 x 480 masks by itself; on one thread it would get IPP's, so it is
    compared with IPP off."""
    opencv_threads(threads)
    used_ipp = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(threads > 1 and used_ipp)
    try:
        compare_with_ritms_clicker()
    finally:
        cv2.ipp.setUseIPP(used_ipp)


def compare_with_ritms_clicker():
    rng = np.random.default_rng(0)
    for gt, ignore in grabcut_objects(6):
        clicker = Clicker(gt, ignore)
        replay = reference.ReferenceClicker(gt, ignore)
        for pred in predictions(gt, rng) * 2:  # twice, so that clicked pixels are skipped too
            errors = clicker.errors(pred)
            assert clicker.click(errors) == replay.next_click(pred)
            assert errors.iou() == reference.iou(gt, pred, ignore)


def make_probe() -> ISProbe:
    """An untrained probe whose logits are large enough that its masks change from click to click."""
    config = load_train_config("quickstart")
    torch.manual_seed(0)
    probe = ISProbe(config.model, DIM, PATCH)
    with torch.no_grad():
        probe.head.logit.weight.mul_(300)
    return probe


def patch_featurizer() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Conv2d(3, DIM, PATCH, stride=PATCH).eval()


def tasks(count: int, flip: bool, cached: bool, featurizer: torch.nn.Module):
    source = create_dataset("grabcut", str(GRABCUT), "test")
    for task in islice(online_tasks(source, SIZE, "stretch", flip), count):
        if cached:
            with torch.no_grad():
                features = featurizer(normalize_images(task.view.image[None], MEAN, STD))[0]
            task.view = dataclasses.replace(task.view, features=features)
        yield task


PROTOCOLS = {
    "cache, threshold 0.5, batch 2": dict(flip=False, cached=True, threshold=0.5, batch_size=2, zoom=False),
    "online, flip, threshold 0.3": dict(flip=True, cached=False, threshold=0.3, batch_size=2, zoom=False),
    "iSegProbe: zoom-in, RITM geometry, flip, exact": dict(
        flip=True, cached=False, threshold=0.5, batch_size=1, zoom=True
    ),
}


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_the_loop_gives_what_the_per_object_loop_gave(protocol):
    if not GRABCUT.is_dir():
        pytest.skip(f"GrabCut not found at {GRABCUT}")
    settings = PROTOCOLS[protocol]
    zoom, exact = settings["zoom"], settings["zoom"]
    featurizer = patch_featurizer()
    framing = None
    if zoom:
        framing = partial(_zoom_in, flip=settings["flip"], threshold=settings["threshold"])
    runs = {}
    for name, predictor_class in (("today", Predictor), ("before", reference.PerClickPredictor)):
        predictor = predictor_class(make_probe(), MEAN, STD, torch.device("cpu"), featurizer, exact=exact)
        objects = tasks(3, settings["flip"] and not zoom, settings["cached"], featurizer)
        with deterministic_arithmetic(exact):
            runs[name] = evaluate_with(name, predictor, objects, settings["threshold"], settings["batch_size"], framing)
    (today, today_probs), (before, before_probs) = runs["today"], runs["before"]
    assert [curve.id for curve in today] == [curve.id for curve in before] and len(today) == 3
    for new, old in zip(today, before, strict=True):
        assert new.clicks == old.clicks, new.id
        np.testing.assert_array_equal(new.ious, old.ious)
    for new, old in zip(today_probs, before_probs, strict=True):
        np.testing.assert_array_equal(new, old)
    assert len({curve.ious.tobytes() for curve in today}) == 3, "the objects' curves should differ"


def evaluate_with(name, predictor, objects, threshold, batch_size, framing):
    """One loop's curves and last probabilities, 5 clicks per object."""
    finals = []
    if name == "today":
        run = evaluate_objects(
            predictor, objects, 5, threshold, batch_size, framing=framing,
            on_result=lambda result: finals.append(result.final_probs),
        )  # fmt: skip
    else:
        run = reference.evaluate_per_object(
            predictor, objects, 5, threshold, batch_size, framing=framing,
            on_result=lambda curve, probs: finals.append(probs),
        )  # fmt: skip
    return run.results, finals


def _zoom_in(task, flip: bool, threshold: float) -> ZoomIn:
    return ZoomIn(task.image, SIZE, flip=flip, threshold=threshold, min_crop=60, align_corners=True)
