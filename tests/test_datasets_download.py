"""`isegprobe datasets download` against a local HTTP server: checksums, resumed transfers, unpacking."""

import hashlib
import io
import os
import pickle
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from dataset_trees import box, write_image, write_mask
from tqdm import tqdm

from isegprobe.commands.datasets import datasets
from isegprobe.data import create_dataset, download
from isegprobe.locks import exclusive_lock


class ArchiveHandler(BaseHTTPRequestHandler):
    """Serves `server.payload`, honours Range, and drops the connection halfway while `server.cuts` > 0."""

    def do_GET(self):
        payload, requested = self.server.payload, self.headers.get("Range")
        self.server.ranges.append(requested)
        start = int(requested.removeprefix("bytes=").rstrip("-")) if requested else 0
        if start >= len(payload):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(payload)}")
            self.end_headers()
            return
        self.send_response(206 if requested else 200)
        if requested:
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        self.send_header("Content-Length", str(len(payload) - start))
        self.end_headers()
        body = payload[start:]
        if self.server.cuts > 0:
            self.server.cuts -= 1
            body = body[: len(body) // 2]
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    httpd = HTTPServer(("127.0.0.1", 0), ArchiveHandler)
    httpd.payload, httpd.ranges, httpd.cuts = b"", [], 0
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _url(server, name):
    return f"http://127.0.0.1:{server.server_address[1]}/{name}"


def _grabcut_zip(tmp_path):
    """A zip laid out like the f-BRS GrabCut.zip: a top folder with data_GT/ and boundary_GT/ (padded to 64 KiB)."""
    source = tmp_path / "src"
    write_image(source / "data_GT" / "a.png", 12, 16)
    write_mask(source / "boundary_GT" / "a.bmp", box(12, 16, 2, 2, 8, 8))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for path in sorted(source.rglob("*.*")):
            bundle.write(path, f"GrabCut/{path.relative_to(source)}")
        bundle.writestr("GrabCut/padding.bin", np.random.default_rng(0).bytes(1 << 16))
    return buffer.getvalue()


def _download(*args):
    return CliRunner().invoke(datasets, ["download", *[str(arg) for arg in args]])


def test_matching_checksum_downloads_and_unpacks_into_the_loader_layout(server, tmp_path):
    server.payload = _grabcut_zip(tmp_path)
    digest = hashlib.sha256(server.payload).hexdigest()
    result = _download("grabcut", "--to", tmp_path / "data", "--url", _url(server, "GrabCut.zip"), "--sha256", digest)
    assert result.exit_code == 0, result.output
    assert f"sha256 {digest} (matches)" in result.output
    root = tmp_path / "data" / "GrabCut"
    assert create_dataset("grabcut", root)[0].num_instances == 1
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["GrabCut"], "archive and scratch folders are gone"
    again = _download("grabcut", "--to", tmp_path / "data", "--url", _url(server, "GrabCut.zip"))
    assert "already has the grabcut layout" in again.output and len(server.ranges) == 1


def test_the_settings_line_it_suggests_names_the_folder_from_anywhere(server, tmp_path, monkeypatch):
    """datasets.yaml is read from whichever folder a command runs in: a relative root there would move with it."""
    server.payload = _grabcut_zip(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = _download("grabcut", "--to", "downloads", "--url", _url(server, "GrabCut.zip"))
    assert result.exit_code == 0, result.output
    relative, absolute = Path("downloads", "GrabCut"), tmp_path / "downloads" / "GrabCut"
    assert f"use it with --root {relative}, or set roots.grabcut: {absolute} in" in result.output


def test_a_url_named_like_the_datasets_folder_unpacks_beside_the_users_files(server, tmp_path):
    """A URL ending in /GrabCut: saved under that name, the archive would stand where it is to be unpacked."""
    server.payload = _grabcut_zip(tmp_path)
    notes = tmp_path / "data" / "GrabCut" / "my_notes.txt"
    notes.parent.mkdir(parents=True)
    notes.write_text("mine")
    result = _download("grabcut", "--to", tmp_path / "data", "--url", _url(server, "GrabCut"))
    assert result.exit_code == 0, result.output
    assert create_dataset("grabcut", tmp_path / "data" / "GrabCut")[0].num_instances == 1
    assert notes.read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["GrabCut"]


def test_checksum_mismatch_fails_and_leaves_nothing_behind(server, tmp_path):
    server.payload = _grabcut_zip(tmp_path)
    result = _download("grabcut", "--to", tmp_path / "data", "--url", _url(server, "GrabCut.zip"), "--sha256", "0" * 64)
    assert result.exit_code == 1
    assert "SHA-256 mismatch" in result.output and hashlib.sha256(server.payload).hexdigest() in result.output
    assert not (tmp_path / "data").exists(), "nothing left behind, not even the folder it made"


def test_no_network_says_so_and_a_local_copy_of_the_archive_is_taken_by_url(tmp_path):
    with socket.socket() as unused:  # a port that nothing listens on: the connection is refused at once
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    url = f"http://127.0.0.1:{port}/GrabCut.zip"
    result = _download("grabcut", "--to", tmp_path / "data", "--url", url, "--sha256", "0" * 64)
    assert result.exit_code == 1
    assert "not one byte came; is there a network to it here?" in result.output and ".part" not in result.output
    assert not (tmp_path / "data").exists(), "a download that got nothing leaves no empty folder"
    archive = tmp_path / "GrabCut.zip"
    archive.write_bytes(_grabcut_zip(tmp_path))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    result = _download("grabcut", "--to", tmp_path / "data", "--url", archive.as_uri(), "--sha256", digest)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "GrabCut" / "boundary_GT" / "a.bmp").is_file()


def test_an_archive_already_in_the_folder_is_unpacked_and_kept_and_a_path_is_taken_for_a_url(tmp_path, monkeypatch):
    """The archive given by --url may lie where it would be saved: it is the user's, and stays."""
    archive = tmp_path / "data" / "GrabCut.zip"
    archive.parent.mkdir()
    archive.write_bytes(_grabcut_zip(tmp_path))
    result = _download("grabcut", "--to", tmp_path / "data", "--url", archive.as_uri())
    assert result.exit_code == 0, result.output
    assert f"kept {archive}, which was there before" in result.output
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["GrabCut", "GrabCut.zip"]
    moved = tmp_path / "elsewhere.zip"
    archive.rename(moved)
    monkeypatch.chdir(tmp_path)
    result = _download("grabcut", "--to", tmp_path / "other", "--url", "elsewhere.zip")
    assert result.exit_code == 0, result.output
    assert create_dataset("grabcut", tmp_path / "other" / "GrabCut")[0].num_instances == 1 and moved.is_file()
    result = _download("grabcut", "--to", tmp_path / "third", "--url", tmp_path / "missing.zip")
    assert result.exit_code == 1
    assert "missing.zip: neither a URL (https://..., file:///...) nor an archive file here" in result.output
    result = _download("grabcut", "--to", tmp_path / "third", "--url", (tmp_path / "missing.zip").as_uri())
    assert result.exit_code == 1
    assert f"missing.zip: no archive file at {tmp_path / 'missing.zip'}" in result.output


def test_an_archive_that_unpacks_to_far_more_than_itself_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "UNPACKED_BYTES_ALWAYS_ALLOWED", 1 << 20)
    archive = tmp_path / "GrabCut.zip"
    archive.write_bytes(_grabcut_zip(tmp_path))
    with zipfile.ZipFile(archive, "a", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("GrabCut/zeros.bin", bytes(16 << 20))
    result = _download("grabcut", "--to", tmp_path / "data", "--url", archive.as_uri())
    assert result.exit_code == 1
    assert "more than 50 times its size (the largest entry, 'GrabCut/zeros.bin', 16777216 bytes)" in result.output
    assert not (tmp_path / "data").exists(), "nothing unpacked, and the copy that does not unpack removed"


def test_a_merge_that_would_overwrite_moves_nothing_and_empty_folders_are_filled(tmp_path):
    """A file of the user's where the archive has one stopped the merge halfway: what was moved before it stayed,
    the next run found the layout's folders and said "nothing to download" (exit 0) over a dataset short of
    images; folders made by hand and still empty were taken for the dataset too."""
    archive = tmp_path / "GrabCut.zip"
    archive.write_bytes(_grabcut_zip(tmp_path))
    mine = tmp_path / "data" / "GrabCut" / "data_GT" / "a.png"
    mine.parent.mkdir(parents=True)
    mine.write_text("mine")
    refused = _download("grabcut", "--to", tmp_path / "data", "--url", archive)
    assert refused.exit_code == 1
    assert f"{mine}: already there, and the archive has its own; refusing to overwrite (nothing was moved" in (
        " ".join(refused.output.split())
    )
    assert not (tmp_path / "data" / "GrabCut" / "boundary_GT").exists() and mine.read_text() == "mine"
    mine.unlink()
    (tmp_path / "data" / "GrabCut" / "boundary_GT").mkdir()
    filled = _download("grabcut", "--to", tmp_path / "data", "--url", archive)
    assert filled.exit_code == 0 and "nothing to download" not in filled.output, filled.output
    assert create_dataset("grabcut", tmp_path / "data" / "GrabCut")[0].num_instances == 1
    again = _download("grabcut", "--to", tmp_path / "data", "--url", archive)
    assert "already has the grabcut layout; nothing to download (--url not read)" in again.output


def test_an_archive_that_does_not_unpack_is_removed_or_said_to_be_reused(tmp_path):
    """A downloaded file that was no archive was kept, and every later run unpacked it again instead of reading
    its --url, saying only "neither a zip nor a tar archive"."""
    page, good = tmp_path / "page" / "GrabCut.zip", tmp_path / "GrabCut.zip"
    page.parent.mkdir()
    page.write_text("<html>rate limited</html>")
    good.write_bytes(_grabcut_zip(tmp_path))
    refused = _download("grabcut", "--to", tmp_path / "data", "--url", page)
    assert refused.exit_code == 1
    assert "GrabCut.zip: neither a zip nor a tar archive; the downloaded file was removed" in refused.output
    assert _download("grabcut", "--to", tmp_path / "data", "--url", good).exit_code == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "GrabCut.zip").write_bytes(good.read_bytes()[:-200])
    kept = _download("grabcut", "--to", tmp_path / "other", "--url", good)
    assert kept.exit_code == 1
    said = " ".join(kept.output.split())
    assert "GrabCut.zip: a damaged or truncated zip archive (its directory at the end is missing)" in said
    assert f"was there before this run and was unpacked instead of downloading {good.as_uri()}: move it away" in said


@pytest.mark.parametrize("digest", ["xyz", "296A869C", "0" * 63 + "g"])
def test_a_sha256_that_is_not_one_is_refused_before_anything_is_read(tmp_path, digest):
    archive = tmp_path / "GrabCut.zip"
    archive.write_bytes(_grabcut_zip(tmp_path))
    refused = _download("grabcut", "--to", tmp_path / "data", "--url", archive, "--sha256", digest)
    assert refused.exit_code == 1
    assert f"--sha256 {digest}: expected a SHA-256, 64 hexadecimal digits" in refused.output
    assert not (tmp_path / "data").exists()


def test_a_second_download_into_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    """Two at once shared the archive's .part file and the unpacking folder: one unpacked an interleaved archive,
    another said "nothing to download" while the first was still merging."""
    archive = tmp_path / "GrabCut.zip"
    archive.write_bytes(_grabcut_zip(tmp_path))
    with exclusive_lock(tmp_path / "data" / "GrabCut"):
        refused = _download("grabcut", "--to", tmp_path / "data", "--url", archive)
    assert refused.exit_code == 1 and f"(PID {os.getpid()} on " in refused.output, refused.output
    assert not (tmp_path / "data" / "GrabCut").exists()
    assert _download("grabcut", "--to", tmp_path / "data", "--url", archive).exit_code == 0


def test_a_file_on_the_way_to_the_folder_is_named(tmp_path):
    (tmp_path / "afile").write_text("in the way")
    archive = tmp_path / "GrabCut.zip"
    archive.write_bytes(_grabcut_zip(tmp_path))
    refused = _download("grabcut", "--to", tmp_path / "afile" / "sub", "--url", archive)
    assert refused.exit_code == 1
    assert f"a file ({tmp_path / 'afile'}) stands where this path needs a folder" in " ".join(refused.output.split())


def test_interrupted_transfer_resumes_with_a_range_request(server, tmp_path):
    server.payload = _grabcut_zip(tmp_path)
    server.cuts = 1
    digest = hashlib.sha256(server.payload).hexdigest()
    result = _download("grabcut", "--to", tmp_path / "data", "--url", _url(server, "GrabCut.zip"), "--sha256", digest)
    assert result.exit_code == 0, result.output
    assert server.ranges == [None, f"bytes={len(server.payload) // 2}-"]
    assert (tmp_path / "data" / "GrabCut" / "boundary_GT" / "a.bmp").is_file()


def test_a_partial_file_from_an_earlier_run_is_resumed_and_unknown_hashes_are_printed(server, tmp_path):
    server.payload = _grabcut_zip(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "GrabCut.zip.part").write_bytes(server.payload[:1000])
    result = _download("grabcut", "--to", tmp_path / "data", "--url", _url(server, "GrabCut.zip"))
    assert result.exit_code == 0, result.output
    assert server.ranges == ["bytes=1000-"]
    digest = hashlib.sha256(server.payload).hexdigest()
    assert f"sha256 {digest} (no published checksum" in result.output and f"--sha256 {digest}" in result.output


def test_a_connection_that_keeps_dropping_fails_and_keeps_the_partial_file(server, tmp_path):
    server.payload = _grabcut_zip(tmp_path)
    server.cuts = 100
    result = _download("grabcut", "--to", tmp_path / "data", "--url", _url(server, "GrabCut.zip"))
    assert result.exit_code == 1
    assert "download interrupted" in result.output and "run the same command to resume" in result.output
    assert (tmp_path / "data" / "GrabCut.zip.part").stat().st_size > len(server.payload) // 2


def test_cocolvis_annotations_merge_into_an_existing_lvis_folder(server, tmp_path):
    lvis = tmp_path / "data" / "LVIS"
    write_image(lvis / "val" / "images" / "7.jpg", 10, 10)
    layer = box(10, 10, 2, 2, 6, 6, value=1)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        members = {
            "cocolvis_annotation/val/hannotation.pickle": pickle.dumps(
                {"7": {"hierarchy": {0: None}, "num_instance_masks": 1}}
            ),
            "cocolvis_annotation/val/masks/7.pickle": pickle.dumps(([cv2.imencode(".png", layer)[1]], [(0, 1)])),
        }
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    server.payload = buffer.getvalue()
    result = _download("cocolvis", "--to", tmp_path / "data", "--url", _url(server, "cocolvis_annotation.tar.gz"))
    assert result.exit_code == 0, result.output
    assert "put the LVIS v1 images" in result.output
    sample = create_dataset("cocolvis", lvis, "val")[0]
    assert sample.num_instances == 1 and sample.labels.sum() == 16


def test_datasets_without_a_public_archive_are_refused(tmp_path):
    result = _download("coco", "--to", tmp_path)
    assert result.exit_code == 1 and "no public archive" in result.output


def test_the_transfer_shows_bytes_of_the_announced_total(server, tmp_path, monkeypatch):
    """The bar (shown on a terminal) starts where a partial file stops and ends at the archive's length."""
    bars = []

    def shown(*args, **kwargs):
        bars.append(tqdm(*args, **{**kwargs, "disable": False, "file": io.StringIO()}))
        return bars[-1]

    monkeypatch.setattr(download, "tqdm", shown)
    server.payload = _grabcut_zip(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "GrabCut.zip.part").write_bytes(server.payload[:1000])
    result = _download("grabcut", "--to", tmp_path / "data", "--url", _url(server, "GrabCut.zip"))
    assert result.exit_code == 0, result.output
    (bar,) = bars
    assert (bar.initial, bar.n, bar.total, bar.unit) == (1000, len(server.payload), len(server.payload), "B")
    assert "GrabCut.zip: 100%" in bar.fp.getvalue()
