"""Files and requests made by someone else: a crafted pickle or TorchScript archive never runs its code (each one
here would create a marker file if it did), and the web demo answers only its own page, within its limits. Every
refusal names the file, option or limit, comes without a traceback, and leaves what was written as it was."""

from __future__ import annotations

import http.client
import json
import pickle
import socket
import struct
import threading
import time
import warnings
import zlib
from collections.abc import Iterator
from email.message import Message
from email.utils import collapse_rfc2231_value
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np
import pytest
import torch
import uvicorn
from click.testing import CliRunner
from dataset_trees import write_image
from stores import builtin_store
from torch import Tensor, nn

from isegprobe.cache import CachedDataset
from isegprobe.cli import main
from isegprobe.config_loading import load_train_config
from isegprobe.data import create_dataset
from isegprobe.demo import server
from isegprobe.demo.app import build_app
from isegprobe.demo.catalog import ImageCatalog
from isegprobe.demo.upload import read_upload
from isegprobe.errors import UserError
from isegprobe.state_dicts import TorchScriptWarning
from isegprobe.training import train
from isegprobe.training.checkpoint import read_metadata

SIZE = 56


def invoke(*args: object):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def refused(result, *words: str) -> None:
    """The command stopped with status 1 and a message holding `words`, without a traceback."""
    assert result.exit_code == 1, result.output
    for word in words:
        assert word in result.output
    assert "Traceback" not in result.output


class OpensMarker:
    """Pickled, it names `open` (io.open): unpickling it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


class WritesMarker(nn.Module):
    """Scripted and saved, loading it runs its __setstate__, which creates the marker file."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.weight = nn.Parameter(torch.zeros(2))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight

    @torch.jit.export
    def __getstate__(self) -> tuple[str, Tensor, bool]:
        return self.marker, self.weight, self.training

    @torch.jit.export
    def __setstate__(self, state: tuple[str, Tensor, bool]) -> None:
        self.marker, self.training = state[0], state[2]
        self.weight = state[1] + 0 * torch.from_file(self.marker, shared=True, size=2).sum()


def torchscript_archive(path: Path, marker: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(WritesMarker(str(marker))).save(str(path))
    assert not marker.exists()
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of the built-in scenes and the quickstart probe trained on it (as initialised): what train,
    import-seed and the demo read."""
    root = tmp_path_factory.mktemp("untrusted")
    store = builtin_store(root / "cache", size=SIZE, views="identity")
    train(load_train_config("quickstart", ["schedule.max_iters=0"]), CachedDataset(store), root / "run",
          device="cpu", progress=False)  # fmt: skip
    return root


def store_of(world: Path) -> Path:
    return next((world / "cache").glob("*.zarr"))


# COCO+LVIS: RITM's pickles, read with an unpickler that admits builtin containers and numpy arrays only.


def cocolvis_tree(root: Path, annotations: object, packed_masks: object, protocol: int = 4) -> Path:
    """RITM's COCO+LVIS layout with one image (id 42), the annotation file and its mask file pickled as given."""
    split = root / "val"
    write_image(split / "images" / "42.jpg", 20, 20)
    (split / "masks").mkdir(parents=True)
    (split / "masks" / "42.pickle").write_bytes(pickle.dumps(packed_masks, protocol=protocol))
    (split / "hannotation.pickle").write_bytes(pickle.dumps(annotations, protocol=protocol))
    return root


def ritm_files(num_instances: object = 1) -> tuple[dict, tuple]:
    """What RITM's conversion script writes: the annotation dict, and the PNG-encoded layers with their mapping."""
    layer = np.zeros((20, 20), np.uint8)
    layer[2:9, 2:9] = 1
    annotations = {"42": {"num_instance_masks": num_instances, "hierarchy": {0: None}}}
    return annotations, ([cv2.imencode(".png", layer)[1]], [(0, 1)])


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_ritm_pickles_load_as_ritm_wrote_them(tmp_path: Path, protocol: int) -> None:
    """numpy arrays (and a numpy integer) at the protocols Python 3's pickle.dump and HIGHEST_PROTOCOL write."""
    root = cocolvis_tree(tmp_path, *ritm_files(np.int64(1)), protocol=protocol)
    sample = create_dataset("cocolvis", root, "val")[0]
    assert sample.num_instances == 1 and int((sample.labels == 1).sum()) == 49


@pytest.mark.parametrize("crafted", ["hannotation.pickle", "masks/42.pickle"])
def test_a_cocolvis_pickle_that_names_code_is_refused_before_it_runs(tmp_path: Path, crafted: str) -> None:
    marker = tmp_path / "marker"
    annotations, packed = ritm_files()
    if crafted == "hannotation.pickle":
        annotations["42"]["hierarchy"] = {0: OpensMarker(marker)}
    else:
        packed = (packed[0], OpensMarker(marker))
    root = cocolvis_tree(tmp_path / "LVIS", annotations, packed)
    result = invoke("datasets", "check", "cocolvis", "--root", root, "--split", "val")
    refused(result, f"{root / 'val' / crafted}: refused to unpickle io.open", "only dicts, lists, numbers")
    assert not marker.exists(), "the pickle's payload ran"


# Weights files: torch's weights-only unpickler, and TorchScript archives only with --allow-torchscript.


def test_a_torchscript_featurizer_file_is_loaded_only_with_the_flag_which_says_it_runs_code(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    weights = torchscript_archive(tmp_path / "ViT-S-14.pt", marker)
    extract = ["extract-features", "--featurizer", "vit_tiny_patch16_224", "--weights", weights,
               "--dataset", "builtin", "--size", "32", "--out", tmp_path / "cache"]  # fmt: skip
    result = invoke(*extract)
    refused(result, f"weights file {weights} is a TorchScript archive", "not loaded without --allow-torchscript")
    assert not marker.exists(), "the archive's code ran"
    assert not list(tmp_path.glob("cache/*.zarr*")), "no store was started"

    with pytest.warns(TorchScriptWarning, match=f"{weights}: loading a TorchScript archive, which runs the code"):
        allowed = invoke(*extract, "--allow-torchscript")
    refused(allowed, f"weights file {weights} does not fit")
    assert marker.exists(), "with the flag, the archive is loaded (and its code runs)"


def test_torchscript_upsampler_weights_are_refused_by_train(world: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    weights = torchscript_archive(tmp_path / "lift.pt", marker)
    result = invoke("train", "--config", "quickstart", "--store", store_of(world), "--out", tmp_path / "run",
                    "--set", "model.upsampler.name=lift", "--set", f"model.upsampler.weights={weights}")  # fmt: skip
    refused(result, f"weights file {weights} is a TorchScript archive", "--allow-torchscript")
    assert not marker.exists(), "the archive's code ran"
    assert not (tmp_path / "run" / "last.json").exists()


def test_a_seed_checkpoint_that_is_a_torchscript_archive_is_not_imported(world: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    checkpoint = torchscript_archive(tmp_path / "last_checkpoint.pth", marker)
    result = invoke("import-seed", checkpoint, "--store", store_of(world), "--out", tmp_path / "run")
    refused(result, f"{checkpoint}: not a readable iSegProbe checkpoint", "torchscript")
    assert not marker.exists(), "the archive's code ran"
    assert not (tmp_path / "run").exists()


def test_the_weights_only_refusal_names_the_global_and_never_advises_unpickling_anyway(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    weights = tmp_path / "dinov2.pth"
    torch.save({"pos_embed": torch.zeros(1), "payload": OpensMarker(marker)}, weights)
    result = invoke("extract-features", "--featurizer", "vit_tiny_patch16_224", "--weights", weights,
                    "--dataset", "builtin", "--size", "32", "--out", tmp_path / "cache")  # fmt: skip
    refused(result, f"could not read weights file {weights} (it names io.open, which is not a tensor")
    assert "weights_only=False" not in result.output and "safe_globals" not in result.output
    assert not marker.exists(), "the pickle's payload ran"


# The web demo: a real server on a free port of 127.0.0.1, over real HTTP.


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def demo(world: Path) -> Iterator[int]:
    """The demo of the world's probe, with a 256 KiB upload limit, serving on a free port: its port."""
    folder = world / "images"
    write_image(folder / "scene.png", 48, 64)
    port = free_port()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(server, "MAX_UPLOAD_BYTES", 256 * 1024)
        app = build_app([str(world / "run")], ImageCatalog.from_options(str(folder), None), port=port)
    serving = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=serving.run, daemon=True)
    thread.start()
    try:
        while not serving.started:
            time.sleep(0.05)
        yield port
    finally:
        serving.should_exit = True
        thread.join(timeout=10)


def call(port: int, method: str, path: str, body: bytes | None = None, **headers: str):
    """(status, JSON answer or bytes, headers) of one request; Host is the demo's own unless given."""
    headers = {"Host": f"127.0.0.1:{port}", **{name.replace("_", "-"): value for name, value in headers.items()}}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        data = answer.read()
        kind = answer.getheader("content-type", "")
        return answer.status, json.loads(data) if kind.startswith("application/json") else data, answer.headers
    finally:
        connection.close()


def png(width: int = 40, height: int = 30) -> bytes:
    return cv2.imencode(".png", np.full((height, width, 3), 120, np.uint8))[1].tobytes()


def opened(port: int) -> dict:
    """Open the listed scene and click it once: the state every hostile request below must leave as it is."""
    call(port, "POST", "/api/open", json.dumps({"name": "scene.png"}).encode(), Content_Type="application/json")
    status, state, _ = call(port, "POST", "/api/click", b'{"x": 20, "y": 10, "positive": true}',
                            Content_Type="application/json")  # fmt: skip
    assert status == 200 and state["image"] == "scene.png"
    return state


def unchanged(port: int, before: dict) -> None:
    status, after, _ = call(port, "GET", "/api/state")
    assert status == 200
    assert (after["image"], after["clicks"], after["objects"]) == (before["image"], before["clicks"], before["objects"])


def declaring(width: int, height: int, kind: str) -> bytes:
    """A small real image whose header declares width x height pixels."""
    if kind == "png":
        data = bytearray(png(8, 8))
        data[16:24] = struct.pack(">II", width, height)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
        return bytes(data)
    data = bytearray(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    frame = data.index(b"\xff\xc0")
    data[frame + 5 : frame + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize(
    ("kind", "width", "height", "said"),
    [
        ("jpeg", 8000, 6000, "huge.img: 8000x6000 pixels (48.0 MP), more than the 40 MP an upload may have"),
        ("png", 7000, 6000, "huge.img: 7000x6000 pixels (42.0 MP), more than the 40 MP an upload may have"),
        # Past Pillow's own decompression-bomb limit, Pillow tells no size.
        ("png", 20000, 20000, "huge.img: its header declares more than 179 MP, more than the 40 MP an upload may"),
    ],
)
def test_an_upload_declaring_too_many_pixels_is_refused_from_its_header(demo: int, kind: str, width: int,
                                                                        height: int, said: str) -> None:  # fmt: skip
    before = opened(demo)
    started = time.perf_counter()
    status, answer, _ = call(demo, "POST", "/api/upload?name=huge.img", declaring(width, height, kind))
    assert status == 413, answer
    assert said in answer["detail"]
    assert time.perf_counter() - started < 5, "refused before decoding"
    unchanged(demo, before)


def test_an_upload_is_decoded_off_the_event_loop(demo: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """While an upload is being decoded, the server answers other requests."""
    entered, release = threading.Event(), threading.Event()

    def slow_read_upload(data: bytes, name: str) -> np.ndarray:
        entered.set()
        release.wait(timeout=20)
        return read_upload(data, name)

    monkeypatch.setattr(server, "read_upload", slow_read_upload)
    answers = []
    uploading = threading.Thread(target=lambda: answers.append(call(demo, "POST", "/api/upload?name=a.png", png())))
    uploading.start()
    try:
        assert entered.wait(timeout=10)
        status, state, _ = call(demo, "GET", "/api/state")
        assert status == 200, "answered while the upload was being decoded"
    finally:
        release.set()
        uploading.join(timeout=20)
    assert answers[0][0] == 200 and answers[0][1]["image"] == "a.png"


def test_a_chunked_upload_without_a_length_is_stopped_at_the_limit(demo: int) -> None:
    """The body is sent in chunks and never finished: the answer comes once the limit is passed."""
    before = opened(demo)
    connection = http.client.HTTPConnection("127.0.0.1", demo, timeout=10)
    try:
        connection.putrequest("POST", "/api/upload?name=endless.png")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        chunk = b"\x00" * (100 * 1024)
        for _ in range(3):
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        answer = connection.getresponse()
        status, detail = answer.status, json.loads(answer.read())["detail"]
    finally:
        connection.close()
    assert status == 413
    assert detail == "endless.png: more than the 256.0 KiB an upload may have (stopped reading there)"
    unchanged(demo, before)


def test_a_json_request_over_its_limit_is_refused(demo: int) -> None:
    before = opened(demo)
    body = json.dumps({"name": "x" * 100_000}).encode()
    status, answer, _ = call(demo, "POST", "/api/open", body, Content_Type="application/json")
    assert status == 413 and answer["detail"].startswith("/api/open: 97.7 KiB, more than the 64.0 KiB a request")
    unchanged(demo, before)


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/", {"Host": "attacker.example:{port}"}),
        ("GET", "/api/instances.png", {"Host": "attacker.example:{port}"}),
        ("GET", "/api/state", {"Host": "127.0.0.1:1"}),
        ("POST", "/api/upload?name=theirs.png", {"Origin": "http://attacker.example", "Content-Type": "text/plain"}),
        ("POST", "/api/reset", {"Origin": "null"}),
        ("POST", "/api/finish", {"Origin": "http://127.0.0.1:{port}.attacker.example"}),
    ],
)
def test_requests_from_another_site_are_refused(demo: int, method: str, path: str, headers: dict[str, str]) -> None:
    before = opened(demo)
    headers = {name: value.format(port=demo) for name, value in headers.items()}
    status, answer, _ = call(demo, method, path, png() if "upload" in path else None, **headers)
    assert status == 403
    if "Origin" in headers:
        assert f"a request from {headers['Origin']!r} refused" in answer["detail"]
        assert f"the demo answers its own page (http://127.0.0.1:{demo}) only" in answer["detail"]
    else:
        assert f"Host {headers['Host']!r} refused" in answer["detail"]
        assert f"127.0.0.1 or ::1 or localhost, port {demo}" in answer["detail"]
    unchanged(demo, before)


def test_the_demos_own_page_and_localhost_are_answered(demo: int) -> None:
    status, page, _ = call(demo, "GET", "/", Host=f"localhost:{demo}")
    assert status == 200 and b"isegprobe demo" in page
    status, state, _ = call(demo, "POST", "/api/upload?name=own.png", png(), Origin=f"http://127.0.0.1:{demo}")
    assert status == 200 and state["image"] == "own.png"


@pytest.mark.parametrize(
    ("path", "body", "field", "expected"),
    [
        ("/api/click", '{"x": NaN, "y": 3, "positive": true}', "x", "Input should be a finite number"),
        ("/api/click", '{"x": 3, "y": -Infinity, "positive": true}', "y", "Input should be a finite number"),
        ("/api/click", '{"x": 1e999, "y": 3, "positive": true}', "x", "Input should be a finite number"),
        ("/api/click", '{"x": 3, "y": 3, "positive": NaN}', "positive", "Input should be a valid boolean"),
        ("/api/open", '{"name": Infinity}', "name", "Input should be a valid string"),
    ],
)
def test_non_finite_numbers_in_json_are_a_bad_request(demo: int, path: str, body: str, field: str,
                                                      expected: str) -> None:  # fmt: skip
    before = opened(demo)
    status, answer, _ = call(demo, "POST", path, body.encode(), Content_Type="application/json")
    assert status == 400, answer
    assert f"{path}: {field}: {expected}" in answer["detail"]
    unchanged(demo, before)


@pytest.mark.parametrize("name", ['quote".png', 'semi;colon" filename="evil.exe.png', "back\\slash\r\nété.png"])
def test_an_upload_name_is_escaped_in_the_download_header(demo: int, name: str) -> None:
    status, _, _ = call(demo, "POST", f"/api/upload?name={quote(name)}", png())
    assert status == 200
    status, data, headers = call(demo, "GET", "/api/instances.png")
    assert status == 200 and data.startswith(b"\x89PNG")
    disposition = Message()
    disposition["content-disposition"] = headers["content-disposition"]
    params = disposition.get_params(header="content-disposition")
    assert [key for key, _ in params] == ["attachment", "filename", "filename"], "filename and filename*, no more"
    (fallback, exact) = (value for key, value in params if key == "filename")
    assert collapse_rfc2231_value(exact) == f"{Path(name).stem}_instances.png", "the exact name, as UTF-8"
    assert fallback.isascii() and not set(fallback) & set('"\\\r\n'), "for old clients: no quote, no escape"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deep to read"),
        ("[1]", "not an isegprobe probe checkpoint"),
        (b"\xff\xfe{", "not valid JSON"),
    ],
)
def test_checkpoint_metadata_of_any_json_is_refused_in_one_line(tmp_path: Path, content: str | bytes, message: str):
    """A list, bytes that are not UTF-8 and JSON nested past the parser's depth (RecursionError) were tracebacks."""
    path = tmp_path / "last.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError, match=message):
        read_metadata(path)


def test_a_coco_file_nested_past_the_parsers_depth_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "annotations.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UserError, match="annotations.json: not a COCO-format JSON"):
        create_dataset("custom", path)
