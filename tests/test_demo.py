"""`isegprobe demo`: the session segments as evaluation does, the API drives it, and a real browser drives the page."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import uvicorn
from click.testing import CliRunner
from fastapi.testclient import TestClient
from launch import ISEGPROBE
from stores import builtin_store

from isegprobe.cache import CachedDataset
from isegprobe.cli import main
from isegprobe.config_loading import load_train_config
from isegprobe.data import create_dataset
from isegprobe.demo import server
from isegprobe.demo.app import build_app
from isegprobe.demo.catalog import DatasetCatalog, ImageCatalog
from isegprobe.demo.guard import DemoAddress
from isegprobe.demo.session import MAX_CLICKS, DemoProbe, DemoSession
from isegprobe.errors import UserError
from isegprobe.inference.clicker import Click
from isegprobe.inference.evaluation import WholeImage
from isegprobe.inference.metrics import iou
from isegprobe.inference.predictor import Predictor
from isegprobe.inference.runner import checkpoint_featurizer
from isegprobe.inference.tasks import online_tasks
from isegprobe.inference.zoom_in import ZoomIn
from isegprobe.training import train
from isegprobe.training.checkpoint import load_probe

SIZE = 56


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """The quickstart probe, as initialised, on a random-weight ViT-S/14 store of the built-in scenes."""
    folder = tmp_path_factory.mktemp("demo")
    store = builtin_store(folder / "cache", size=SIZE)
    config = load_train_config("quickstart", ["schedule.max_iters=0"])
    train(config, CachedDataset(store), folder / "run", device="cpu", progress=False)
    return folder / "run"


@pytest.fixture(scope="module")
def bilinear_checkpoint(tmp_path_factory) -> Path:
    """A second probe on the same featurizer: the quickstart's with a bilinear upsampler, as initialised."""
    folder = tmp_path_factory.mktemp("demo_bilinear")
    store = builtin_store(folder / "cache", size=SIZE)
    config = load_train_config("quickstart", ["schedule.max_iters=0", "model.upsampler.name=bilinear", "seed=1"])
    train(config, CachedDataset(store), folder / "run", device="cpu", progress=False)
    return folder / "run"


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    source = create_dataset("builtin", split="test")
    for index in range(2):
        sample = source[index]
        cv2.imwrite(str(folder / f"{sample.id}.png"), cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
    return folder


def api(app) -> TestClient:
    """A client that calls the app at the address it serves (127.0.0.1:8765 by default), as its own page does."""
    return TestClient(app, base_url="http://127.0.0.1:8765")


def session_for(checkpoint: Path, zoom_in: bool = False) -> DemoSession:
    probe, metadata = load_probe(checkpoint)
    featurizer = checkpoint_featurizer(metadata)
    preprocessing = metadata["preprocessing"]
    predictor = Predictor(probe, preprocessing["mean"], preprocessing["std"], torch.device("cpu"), featurizer)
    return DemoSession([DemoProbe("probe", predictor, SIZE, preprocessing["resize"])], zoom_in=zoom_in)


def test_the_session_predicts_what_evaluation_predicts_and_undo_replays_exactly(checkpoint: Path) -> None:
    session = session_for(checkpoint)
    sample = create_dataset("builtin", split="test")[0]
    session.open(sample.id, sample.image)
    clicks = [Click(20, 30, True), Click(5, 5, False), Click(40, 50, True)]
    masks = []
    for click in clicks:
        session.click(click.y, click.x, click.is_positive)
        masks.append(session.probs.copy())

    # Evaluation's whole-image framing on the online view of the same image, with the same clicks.
    task = next(online_tasks(create_dataset("builtin", split="test"), SIZE, "stretch", flip=False))
    framing = WholeImage.of_task(task, "cpu")
    for index in range(len(clicks)):
        probs = session.probes[0].predictor.probabilities([framing.inputs(clicks[: index + 1])])[0]
        np.testing.assert_allclose(framing.to_original(probs).numpy(), masks[index], atol=1e-6)

    session.undo()
    np.testing.assert_array_equal(session.probs, masks[1])
    assert session.clicks == clicks[:2]
    count = session.finish()
    assert count == (1 if (masks[1] > 0.5).any() else 0)
    assert session.clicks == [] and not session.mask().any()
    np.testing.assert_array_equal(session.image.instances == 1, (masks[1] > 0.5) if count else False)


def test_one_object_takes_at_most_its_clicks_and_the_next_starts_afresh(checkpoint: Path) -> None:
    # Undo replays every click while the server waits: without a bound, 3000 clicks made one undo take 28 s.
    session = session_for(checkpoint)
    sample = create_dataset("builtin", split="test")[0]
    session.open(sample.id, sample.image)
    for index in range(MAX_CLICKS):
        session.click(index % 40, index % 50, index % 2 == 0)
    with pytest.raises(UserError, match=f"{MAX_CLICKS} clicks on one object is the most the demo takes"):
        session.click(1, 1, True)
    assert len(session.clicks) == MAX_CLICKS
    session.finish()
    session.click(1, 1, True)
    assert len(session.clicks) == 1


def test_zoom_in_sessions_follow_evaluations_zoom_in_and_undo_exactly(checkpoint: Path) -> None:
    session = session_for(checkpoint, zoom_in=True)
    sample = create_dataset("builtin", split="test")[1]
    session.open(sample.id, sample.image)
    clicks = [Click(60, 80, True), Click(100, 150, True), Click(10, 10, False)]
    masks = []
    for click in clicks:
        masks.append(session.click(click.y, click.x, click.is_positive).copy())
    framing = ZoomIn(sample.image, SIZE)
    for index in range(len(clicks)):
        probs = session.probes[0].predictor.probabilities([framing.inputs(clicks[: index + 1])])[0]
        np.testing.assert_allclose(framing.to_original(probs).numpy(), masks[index], atol=1e-6)
    session.undo()
    np.testing.assert_array_equal(session.probs, masks[1])


def inside(sample, instance: int) -> tuple[int, int]:
    """A pixel of `instance` in the middle of its list of pixels (y, x)."""
    pixels = np.argwhere(sample.labels == instance)
    y, x = pixels[len(pixels) // 2]
    return int(y), int(x)


def test_with_ground_truth_the_session_scores_the_object_under_the_first_positive_click(checkpoint: Path) -> None:
    session = session_for(checkpoint)
    sample = create_dataset("builtin", split="test")[0]
    session.open(sample.id, sample.image, sample)
    background = np.argwhere(sample.labels == 0)[0]
    session.click(int(background[0]), int(background[1]), False)
    assert session.truth_object() == 0 and session.truth_iou() is None, "no positive click yet"
    y, x = inside(sample, 2)
    session.click(y, x, True)
    assert session.truth_object() == 2
    assert session.truth_iou() == iou(sample.labels == 2, session.probs > 0.5, sample.ignore)
    session.reset()
    session.click(int(background[0]), int(background[1]), True)
    assert session.truth_object() == 0 and session.truth_iou() is None, "a first positive click on background"

    session.open("file.png", sample.image)
    session.click(y, x, True)
    assert session.truth_object() == 0 and session.truth_iou() is None, "an image without ground truth"


def test_the_api_shows_the_iou_on_a_datasets_images(checkpoint: Path) -> None:
    source = create_dataset("builtin", split="test")
    client = api(build_app([str(checkpoint)], DatasetCatalog.from_options("builtin", None, "test")))
    assert client.get("/api/state").json()["images"] == list(source.ids())
    sample = source[1]
    state = client.post("/api/open", json={"name": sample.id}).json()
    assert (state["ground_truth"], state["truth_object"], state["panels"][0]["iou"]) == (True, 0, None)
    y, x = inside(sample, 1)
    state = client.post("/api/click", json={"x": x, "y": y, "positive": True}).json()
    assert state["truth_object"] == 1 and 0.0 <= state["panels"][0]["iou"] <= 1.0
    unknown = client.post("/api/open", json={"name": "../" + sample.id})
    assert unknown.status_code == 400 and "no image '../" in unknown.json()["detail"]


def test_probes_side_by_side_each_segment_as_they_would_alone(checkpoint: Path, bilinear_checkpoint: Path) -> None:
    sample = create_dataset("builtin", split="test")[0]
    first, second = session_for(checkpoint), session_for(bilinear_checkpoint)
    both = DemoSession([*first.probes, *second.probes])
    clicks = [Click(*inside(sample, 1), True), Click(3, 3, False)]
    for session in (first, second, both):
        session.open(sample.id, sample.image, sample)
        for click in clicks:
            session.click(click.y, click.x, click.is_positive)
    np.testing.assert_array_equal(both.all_probs[0], first.probs)
    np.testing.assert_array_equal(both.all_probs[1], second.probs)
    assert not np.array_equal(first.probs, second.probs), "two different probes"
    assert both.truth_iou(1) == second.truth_iou()

    client = api(build_app([str(checkpoint), str(bilinear_checkpoint)], DatasetCatalog(create_dataset("builtin"))))
    client.post("/api/open", json={"name": sample.id})
    y, x = inside(sample, 1)
    state = client.post("/api/click", json={"x": x, "y": y, "positive": True}).json()
    labels = [panel["label"] for panel in state["panels"]]
    assert labels == [
        "vit_small_patch14_dinov2 + identity + after_backbone",
        "vit_small_patch14_dinov2 + bilinear + after_backbone",
    ]
    assert all(0.0 <= panel["iou"] <= 1.0 for panel in state["panels"])


def panel_labels(checkpoints: list[Path]) -> list[str]:
    """The probes' labels on the page of a demo of `checkpoints`, once an image is open."""
    client = api(build_app([str(path) for path in checkpoints], DatasetCatalog(create_dataset("builtin"))))
    state = client.post("/api/open", json={"name": client.get("/api/state").json()["images"][0]}).json()
    return [panel["label"] for panel in state["panels"]]


def test_two_runs_or_checkpoints_of_one_recipe_are_told_apart(checkpoint: Path, tmp_path: Path) -> None:
    again = shutil.copytree(checkpoint, tmp_path / "again")
    probe = "vit_small_patch14_dinov2 + identity + after_backbone"
    assert panel_labels([checkpoint / "last.safetensors", again]) == [f"{probe} (run)", f"{probe} (again)"]
    for suffix in (".json", ".safetensors"):
        (again / f"best{suffix}").write_bytes((again / f"last{suffix}").read_bytes())
    assert panel_labels([again / "last.json", again]) == [f"{probe} (last)", f"{probe} (best)"]


def test_uploads_over_the_size_limit_are_refused_before_decoding(
    checkpoint: Path, image_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "MAX_UPLOAD_BYTES", 1000)
    client = api(build_app([str(checkpoint)], ImageCatalog.from_options(str(image_folder), None)))
    encoded = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8))[1].tobytes()
    refused = client.post("/api/upload?name=noise.png", content=encoded)
    assert refused.status_code == 413 and "noise.png" in refused.json()["detail"]
    assert client.get("/api/state").json()["image"] is None, "the server keeps serving, nothing was opened"


def test_the_demo_command_takes_one_source_of_images(checkpoint: Path, image_folder: Path) -> None:
    result = CliRunner().invoke(
        main, ["demo", "--checkpoint", str(checkpoint), "--images", str(image_folder), "--dataset", "builtin"]
    )
    assert result.exit_code != 0 and "--images and --dataset: give one of them" in result.output


@pytest.mark.parametrize(
    ("options", "message"),
    [(["--root", "data/GrabCut"], "--root data/GrabCut"), (["--split", "train"], "--split train")],
)
def test_options_of_a_dataset_without_one_are_refused(checkpoint: Path, options: list[str], message: str) -> None:
    """They were read by nothing, and the page listed no dataset without a word."""
    with socket.socket() as taken:  # a demo that got past its options would stop at the port instead of serving
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = CliRunner().invoke(main, ["demo", "--checkpoint", str(checkpoint), *options, "--port", port])
    assert result.exit_code == 1
    assert f"{message}: options of --dataset, which was not given; add --dataset NAME" in result.output


def test_a_folder_named_like_an_image_is_not_listed(image_folder: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    shutil.copytree(image_folder, images)
    (images / "dir.png").mkdir()
    assert "dir.png" not in ImageCatalog.from_options(str(images), None).names()


def test_the_hidden_files_a_mac_leaves_beside_the_images_are_not_listed(image_folder: Path, tmp_path: Path) -> None:
    """macOS's AppleDouble `._NAME.png` (notes, not a picture) was listed, and failed when picked."""
    images = tmp_path / "images"
    shutil.copytree(image_folder, images)
    listed = ImageCatalog.from_options(str(images), None).names()
    for name in listed:
        (images / f"._{name}").write_bytes(b"\0\5\26\7 AppleDouble notes")
    assert ImageCatalog.from_options(str(images), None).names() == listed


def test_an_image_option_that_names_no_image_file_is_refused_at_start(checkpoint: Path, tmp_path: Path) -> None:
    notes = tmp_path / "results.json"
    notes.write_text("{}")
    result = CliRunner().invoke(main, ["demo", "--checkpoint", str(checkpoint), "--image", str(notes)])
    assert result.exit_code == 1 and f"--image {notes}: not an image file" in result.output


def test_an_image_whose_file_name_is_not_utf8_is_refused_at_start(
    checkpoint: Path, image_folder: Path, tmp_path: Path
) -> None:
    # Every answer of the API lists the names, in JSON: with such a name the demo started, then each request was a 500.
    listed = next(image_folder.iterdir())
    shutil.copy(listed, tmp_path / "plain.png")
    shutil.copy(listed, tmp_path / os.fsdecode(b"caf\xe9.png"))
    with socket.socket() as taken:  # a demo that got past the images would stop at the port instead of serving
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        command = ["demo", "--checkpoint", str(checkpoint), "--images", str(tmp_path), "--port", port]
        result = CliRunner().invoke(main, command)
    assert result.exit_code == 1, result.output
    assert f"{tmp_path}: the file name b'caf\\xe9.png' is not UTF-8 text" in result.output
    assert "isegprobe demo on" not in result.output


def picture_of(state: dict) -> np.ndarray:
    header, data = state["panels"][0]["picture"].split(",", 1)
    assert header == "data:image/jpeg;base64"
    return cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)


def test_the_api_opens_clicks_undoes_finishes_and_downloads(checkpoint: Path, image_folder: Path) -> None:
    client = api(build_app([str(checkpoint)], ImageCatalog.from_options(str(image_folder), None)))
    page = client.get("/")
    assert page.status_code == 200 and "isegprobe demo" in page.text
    assert client.get("/static/app.js").status_code == 200
    names = sorted(path.name for path in image_folder.iterdir())
    assert client.get("/api/state").json() == {"images": names, "image": None, "seconds": 0.0}

    state = client.post("/api/open", json={"name": names[0]}).json()
    height, width = cv2.imread(str(image_folder / names[0])).shape[:2]
    assert (state["width"], state["height"], state["clicks"], state["objects"]) == (width, height, [], 0)
    assert picture_of(state).shape == (height, width, 3)

    state = client.post("/api/click", json={"x": 30, "y": 20, "positive": True}).json()
    state = client.post("/api/click", json={"x": 5, "y": 5, "positive": False}).json()
    assert state["clicks"] == [{"x": 30, "y": 20, "positive": True}, {"x": 5, "y": 5, "positive": False}]
    state = client.post("/api/undo").json()
    assert state["clicks"] == [{"x": 30, "y": 20, "positive": True}]
    state = client.post("/api/finish").json()
    assert state["clicks"] == [] and state["objects"] in (0, 1)

    download = client.get("/api/instances.png")
    assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
    instances = cv2.imdecode(np.frombuffer(download.content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert instances.shape == (height, width) and int(instances.max()) == state["objects"]

    outside = client.post("/api/click", json={"x": width, "y": 0, "positive": True})
    assert outside.status_code == 400
    assert outside.json()["detail"] == f"click at x={width}, y=0 is outside the image, {width} wide and {height} high"
    assert client.post("/api/open", json={"name": "missing.png"}).status_code == 400

    encoded = cv2.imencode(".png", np.full((30, 40, 3), 200, np.uint8))[1].tobytes()
    uploaded = client.post("/api/upload?name=grey.png", content=encoded).json()
    assert (uploaded["image"], uploaded["width"], uploaded["height"]) == ("grey.png", 40, 30)
    large = cv2.imencode(".png", np.full((1000, 2000, 3), 90, np.uint8))[1].tobytes()
    uploaded = client.post("/api/upload?name=large.png", content=large).json()
    assert (uploaded["width"], uploaded["height"]) == (2000, 1000), "clicks stay in the image's own pixels"
    assert picture_of(uploaded).shape == (800, 1600, 3), "the picture sent is at most 1600 px on a side"
    clicked = client.post("/api/click", json={"x": 1999, "y": 999, "positive": True}).json()
    assert clicked["clicks"] == [{"x": 1999, "y": 999, "positive": True}]
    listed = client.post(f"/api/upload?name={names[0]}", content=encoded).json()
    assert listed["image"] == f"upload-{names[0]}", "an upload never takes the name of an image of the list"
    refused = client.post("/api/upload?name=notes.txt", content=b"not an image")
    assert refused.status_code == 400 and "notes.txt: cannot read this image" in refused.json()["detail"]
    cut = client.post(
        "/api/upload?name=cut.jpg", content=cv2.imencode(".jpg", np.zeros((30, 40, 3), np.uint8))[1][:-40]
    )
    assert cut.status_code == 400 and "cut.jpg: this image file is truncated" in cut.json()["detail"]
    unnamed = client.post("/api/upload?name=%20", content=encoded).json()
    assert unnamed["image"] == "upload", "an upload of no name is called upload, not listed as ''"


def test_a_click_of_the_wrong_json_types_is_refused_naming_each_field(checkpoint: Path, image_folder: Path) -> None:
    # Pydantic's lax integers and booleans recorded {"x": true, "y": false, "positive": "no"} as a click at (1, 0).
    client = api(build_app([str(checkpoint)], ImageCatalog.from_options(str(image_folder), None)))
    client.post("/api/open", json={"name": client.get("/api/state").json()["images"][0]})
    refused = client.post("/api/click", json={"x": True, "y": False, "positive": "no"})
    assert refused.status_code == 400
    assert refused.json()["detail"] == (
        "/api/click: x: Input should be a valid integer: a number, not true, false or text; "
        "y: Input should be a valid integer: a number, not true, false or text; "
        "positive: Input should be a valid boolean"
    )
    wrong = [
        ({"x": "3", "y": 2, "positive": True}, "x"),
        ({"x": 3, "y": 2.5, "positive": True}, "y"),
        ({"x": 3, "y": 2, "positive": 1}, "positive"),
        ({"x": 3, "y": 2, "positive": "true"}, "positive"),
    ]
    for body, field in wrong:
        answer = client.post("/api/click", json=body)
        assert answer.status_code == 400 and answer.json()["detail"].startswith(f"/api/click: {field}: "), body
    unnamed = client.post("/api/open", json={"name": 0})
    assert unnamed.status_code == 400 and unnamed.json()["detail"] == "/api/open: name: Input should be a valid string"
    assert client.get("/api/state").json()["clicks"] == []
    extra = client.post("/api/click", json={"x": 3, "y": 2, "positive": True, "postive": False})
    assert extra.status_code == 400 and extra.json()["detail"].startswith("/api/click: postive: Extra inputs")
    extra = client.post("/api/open", json={"name": "a.png", "split": "test"})
    assert extra.status_code == 400 and extra.json()["detail"].startswith("/api/open: split: Extra inputs")
    # What the page sends (whole numbers, true or false) is taken, and so is a whole number written as 3.0.
    state = client.post("/api/click", json={"x": 3.0, "y": 2, "positive": False}).json()
    assert state["clicks"] == [{"x": 3, "y": 2, "positive": False}]


def test_a_body_that_is_not_a_json_object_is_refused_saying_what_it_was(checkpoint: Path, image_folder: Path) -> None:
    # Pydantic said "Field required" of no body and "Input should be a valid dictionary" of JSON sent as text/plain.
    client = api(build_app([str(checkpoint)], ImageCatalog.from_options(str(image_folder), None)))
    client.post("/api/open", json={"name": client.get("/api/state").json()["images"][0]})
    click = b'{"x": 3, "y": 2, "positive": true}'
    answers = {
        "no Content-Type": client.post("/api/click", content=click),
        "text/plain": client.post("/api/click", content=click, headers={"Content-Type": "text/plain"}),
        "no body": client.post("/api/click"),
        "an array": client.post("/api/click", json=[3, 2, True]),
        "not JSON": client.post("/api/click", content=b"{x: 3}", headers={"Content-Type": "application/json"}),
    }
    assert {case: answer.json()["detail"] for case, answer in answers.items()} == {
        "no Content-Type": "/api/click: the body must be JSON sent with Content-Type: application/json; this "
        "request's Content-Type is missing",
        "text/plain": "/api/click: the body must be JSON sent with Content-Type: application/json; this request's "
        "Content-Type is text/plain",
        "no body": "/api/click: the body must be a JSON object, and none was sent",
        "an array": "/api/click: the body must be a JSON object, not an array",
        "not JSON": "/api/click: the body is not valid JSON: Expecting property name enclosed in double quotes at "
        "character 1",
    }
    assert all(answer.status_code == 400 for answer in answers.values())
    assert client.get("/api/state").json()["clicks"] == []


def test_actions_that_take_no_body_refuse_one_that_says_something(checkpoint: Path, image_folder: Path) -> None:
    # /api/undo, /api/reset and /api/finish ignored any body: {"object": 2} sent to undo undid the last click.
    client = api(build_app([str(checkpoint)], ImageCatalog.from_options(str(image_folder), None)))
    client.post("/api/open", json={"name": client.get("/api/state").json()["images"][0]})
    client.post("/api/click", json={"x": 3, "y": 2, "positive": True})
    for path in ("/api/undo", "/api/reset", "/api/finish"):
        refused = client.post(path, json={"object": 2})
        assert refused.status_code == 400
        expected = f"{path} takes no body: it acts on the open image as it stands (12 bytes sent)"
        assert refused.json()["detail"] == expected
    assert client.get("/api/state").json()["clicks"] == [{"x": 3, "y": 2, "positive": True}]
    assert client.post("/api/undo", json={}).json()["clicks"] == [], "an empty object says nothing and is taken"
    assert client.post("/api/reset").status_code == 200


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_real_browser_clicks_on_the_page(checkpoint: Path, bilinear_checkpoint: Path, tmp_path: Path) -> None:
    """Three clicks on a built-in scene in Chromium, two probes side by side: the status, each probe's IoU against
    the ground truth and the pictures follow; undo by z and by backspace, finish by space. The screenshot after
    three clicks is kept in the test's folder (demo_three_clicks.png)."""
    playwright = pytest.importorskip("playwright.sync_api", reason="the browser test needs `pip install playwright`")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("the browser test needs a Chromium (Debian: apt-get install chromium)")
    sample = create_dataset("builtin", split="test")[0]
    port = free_port()
    catalog = DatasetCatalog.from_options("builtin", None, "test")
    app = build_app([str(checkpoint), str(bilinear_checkpoint)], catalog, port=port)
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def wait_for_text(element: str, text: str) -> None:
        page.wait_for_function(f"document.getElementById({element!r}).textContent.includes({text!r})")

    try:
        while not server.started:
            time.sleep(0.05)
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=chromium)
            page = browser.new_page(viewport={"width": 1000, "height": 420})
            page.goto(f"http://127.0.0.1:{port}/")
            page.select_option("#images", index=0)
            wait_for_text("status", "0 clicks")
            wait_for_text("truth", "the first positive click picks the object")
            unclicked = page.get_attribute(".picture >> nth=0", "src")
            y, x = inside(sample, 1)
            page.click(".picture >> nth=0", position={"x": x, "y": y})
            wait_for_text("status", "1 click,")
            wait_for_text("truth", "IoU with ground-truth object 1:")
            wait_for_text("panels", "bilinear + after_backbone: IoU")
            assert page.get_attribute(".picture >> nth=0", "src") != unclicked, "the click is drawn into the picture"
            page.click(".picture >> nth=0", position={"x": 2, "y": 2}, button="right")
            wait_for_text("status", "2 clicks")
            y, x = inside(sample, 1)
            page.click(".picture >> nth=0", position={"x": x + 1, "y": y + 1})
            wait_for_text("status", "3 clicks")
            page.screenshot(path=str(tmp_path / "demo_three_clicks.png"))
            page.keyboard.press("z")
            wait_for_text("status", "2 clicks")
            page.keyboard.press("Backspace")
            wait_for_text("status", "1 click,")
            page.keyboard.press(" ")
            wait_for_text("status", "0 clicks, 1 object done")
            # Another image would drop the finished object: the page asks, and stays where it is if told no.
            opened, asked = page.input_value("#images"), []
            page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
            page.select_option("#images", index=1)
            question = f"1 finished object of {opened} not saved (Save downloads them): open another image anyway?"
            assert asked == [question]
            assert page.input_value("#images") == opened
            wait_for_text("status", "1 object done")
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_announced_address_is_one_a_browser_opens() -> None:
    """`--host ::1` was announced as http://::1:8765, which no browser opens."""
    assert DemoAddress("::1", 8765).url() == "http://[::1]:8765"
    assert DemoAddress("[::1]", 8765).url() == "http://[::1]:8765"
    assert DemoAddress("127.0.0.1", 8765).url() == "http://127.0.0.1:8765"


def test_a_port_already_in_use_is_said_before_the_page_is_announced(checkpoint: Path, image_folder: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = ["demo", "--checkpoint", str(checkpoint), "--images", str(image_folder), "--port", str(port)]
        refused = CliRunner().invoke(main, command)
    assert refused.exit_code == 1, refused.output
    assert f"--host 127.0.0.1 --port {port}: cannot serve there (Address already in use)" in refused.output
    assert "isegprobe demo on" not in refused.output


def test_the_demo_command_serves_the_page_and_ends_cleanly_on_ctrl_c(checkpoint: Path, image_folder: Path) -> None:
    """The console script as a user starts it: it answers on its port, and Ctrl-C (SIGINT) ends it at once with
    status 0, leaving no process behind."""
    port = free_port()
    command = [ISEGPROBE, "demo", "--checkpoint", str(checkpoint), "--images", str(image_folder), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        state = None
        deadline = time.monotonic() + 120
        while state is None and process.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=1) as answer:
                    state = json.loads(answer.read())
            except OSError:
                time.sleep(0.2)
        assert state is not None, process.stderr.read() if process.poll() is not None else "no answer in 120 s"
        assert state["images"] == sorted(path.name for path in image_folder.iterdir())
        process.send_signal(signal.SIGINT)
        stdout, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    assert f"isegprobe demo on http://127.0.0.1:{port}" in stdout
    assert "upload images" not in stdout, "images were given"
