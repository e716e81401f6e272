"""Outputs a user names (tables, statistics, pictures) are files, never folders, and never replace a training run's or
an evaluation's own files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from isegprobe.atomic_files import write_output_file
from isegprobe.errors import UserError
from isegprobe.output_files import output_file


def folder_with(path: Path, *names: str) -> Path:
    path.mkdir()
    for name in names:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text("kept")
    return path


@pytest.mark.parametrize("name", ["best.json", "last.json", "last.safetensors", "config.yaml", "scalars.csv"])
def test_a_run_keeps_its_files(tmp_path: Path, name: str) -> None:
    """`cache stats --out RUN/best.json` replaced the run's checkpoint metadata: it could be neither resumed nor
    evaluated."""
    run = folder_with(tmp_path / "run", "last.json", "best.json", "last.safetensors", "config.yaml", "scalars.csv")
    with pytest.raises(UserError, match=f"{name}: a file of the training run in .*run, which this would replace"):
        write_output_file(run / name, b"{}")
    assert (run / name).read_text() == "kept"
    write_output_file(run / "stats.json", b"{}")  # a file of its own beside them is welcome


@pytest.mark.parametrize("name", ["results.json", "results.csv", "ious.npz"])
def test_an_evaluation_keeps_its_files(tmp_path: Path, name: str) -> None:
    results = folder_with(tmp_path / "results", "results.json", "results.csv", "ious.npz")
    with pytest.raises(UserError, match=f"{name}: a file of the evaluation in .*results"):
        write_output_file(results / name, b"table")
    assert (results / name).read_text() == "kept"
    write_output_file(results / "report.md", b"table")
    write_output_file(results / "report.md", b"table again")  # an output of its own is replaced as asked
    assert (results / "report.md").read_bytes() == b"table again"


def test_an_evaluation_keeps_its_overlays_and_lets_its_curve_be_drawn_again(tmp_path: Path) -> None:
    """An `evaluate --vis-preds` overlay was replaced by a plot's --out; the same name outside a results folder is a
    plain output, and the curve beside the results is drawn again from them."""
    overlay = "vis/grabcut/im1_5clicks_iou0.950.png"
    results = folder_with(tmp_path / "results", "results.json", overlay, "iou_vs_clicks.png")
    with pytest.raises(UserError, match=f"{overlay}: an overlay of the evaluation in .*results, which only evaluating"):
        write_output_file(results / overlay, b"picture")
    assert (results / overlay).read_text() == "kept"
    elsewhere = folder_with(tmp_path / "mine", overlay)
    write_output_file(elsewhere / overlay, b"picture")
    assert (elsewhere / overlay).read_bytes() == b"picture"
    write_output_file(results / "iou_vs_clicks.png", b"curve")
    assert (results / "iou_vs_clicks.png").read_bytes() == b"curve"


def test_an_output_the_write_would_refuse_is_refused_before_the_work(tmp_path: Path) -> None:
    """`cache stats --out RESULTS/results.json` streamed the whole store and printed its statistics, then refused."""
    results = folder_with(tmp_path / "results", "results.json", "results.csv", "ious.npz")
    with pytest.raises(UserError, match="results.json: a file of the evaluation in"):
        output_file(results / "results.json")
    os.mkfifo(tmp_path / "pipe.md")
    with pytest.raises(UserError, match="pipe.md: a named pipe"):
        output_file(tmp_path / "pipe.md")
    assert output_file(results / "stats.json") == results / "stats.json"


def test_the_same_names_elsewhere_are_plain_outputs(tmp_path: Path) -> None:
    folder = folder_with(tmp_path / "mine", "config.yaml", "results.csv")
    write_output_file(folder / "config.yaml", b"a: 1")
    write_output_file(folder / "results.csv", b"a,b")
    assert (folder / "results.csv").read_bytes() == b"a,b"


@pytest.mark.parametrize("out", ["", "figs/", ".", "..", "folder"])
def test_an_output_that_names_a_folder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: str) -> None:
    """pathlib reads "" as the current folder and drops a trailing separator: `report --out rep/` wrote a file rep."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="--out .*(empty|folder)"):
        output_file(out)
    assert output_file("figs/table.md") == Path("figs/table.md")


def test_a_link_to_a_file_is_written_through_and_a_pipe_or_a_dangling_link_is_refused(tmp_path: Path) -> None:
    # An atomic write replaces what stands at its path: a named pipe or a device (/dev/null) became a plain file.
    target = tmp_path / "target.md"
    target.write_text("old")
    (tmp_path / "link.md").symlink_to(target)
    write_output_file(tmp_path / "link.md", b"new")
    assert (tmp_path / "link.md").is_symlink() and target.read_text() == "new"

    os.mkfifo(tmp_path / "pipe.md")
    with pytest.raises(UserError, match="pipe.md: a named pipe, which writing a file here would replace"):
        write_output_file(tmp_path / "pipe.md", b"new")
    assert (tmp_path / "pipe.md").is_fifo()
    (tmp_path / "dangling.md").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UserError, match="dangling.md: a symbolic link to nothing"):
        write_output_file(tmp_path / "dangling.md", b"new")
    assert not (tmp_path / "nowhere").exists()
