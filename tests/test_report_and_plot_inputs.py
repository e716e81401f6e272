"""`report` and `plot` given inputs that once misled or crashed them: unfinished evaluations, settings that labels
hide, a `|` in a name, output paths that name no file, results.json nested too deeply, and features the PCA cannot
colour."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner, Result
from stores import builtin_store

from isegprobe.cli import main
from isegprobe.errors import UserError
from isegprobe.inference.results import ResultsWriter, read_results
from isegprobe.plots.iou_vs_clicks import evaluation_curves, iou_vs_clicks_figure
from isegprobe.tables import markdown_table

PROBE = {"featurizer": "vit_small_patch14_dinov2", "upsampler": "lift", "fusion": "after_backbone"}
SETTINGS = {"flip": True, "zoom_in": False, "online": False, "threshold": 0.5}


def write_results(
    folder: Path, curves: dict[str, list[float]], complete: bool = True, max_clicks: int = 4, **settings
) -> Path:
    """An evaluation of grabcut with these per-object IoU curves (`max_clicks` clicks), under SETTINGS changed by
    `settings`."""
    writer = ResultsWriter(folder, max_clicks=max_clicks, run_info={**PROBE, **SETTINGS, **settings})
    for object_id, curve in curves.items():
        writer.add("grabcut", object_id, np.array(curve))
    if complete:
        writer.finish("grabcut")
    writer.write()
    return folder


def run(*args: str) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args])


def table_rows(output: str) -> list[list[str]]:
    """The Markdown table's cells, row by row (header first, the rule left out), split at unescaped bars."""
    lines = output.split("\n\n")[0].splitlines()
    return [[cell.strip() for cell in line.replace("\\|", "\0").split("|")[1:-1]] for line in lines[:1] + lines[2:]]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return builtin_store(tmp_path_factory.mktemp("cache"), size=42)


# Three objects that reach 85 and 90 % IoU at once, and one that never does: a run stopped after the first looks best.
EASY = [0.95, 0.95, 0.95, 0.95]
HARD = [0.1, 0.2, 0.3, 0.4]


def test_a_curve_of_an_unfinished_evaluation_says_so_and_counts_that_differ_are_noted(tmp_path: Path) -> None:
    stopped = write_results(tmp_path / "stopped", {"a": EASY}, complete=False)
    done = write_results(tmp_path / "done", {"a": EASY, "b": EASY, "c": HARD})
    result = run("plot", "iou-vs-clicks", stopped, done, "--labels", "stopped,done", "--out", tmp_path / "curves")
    assert result.exit_code == 0, result.output
    svg = (tmp_path / "curves.svg").read_text()
    assert "* stopped after 1 object" in svg
    assert svg.count("stopped after") == 1, "the finished evaluation's curve is not marked"
    assert result.stderr.strip() == (
        "note: grabcut: curves measured different numbers of objects (stopped: 1, done: 3), so they do not compare"
    )
    running = iou_vs_clicks_figure([evaluation_curves(read_results(stopped), "x", running="PID 7 isegprobe evaluate")])
    (legend,) = [text.get_text() for text in running.axes[0].get_legend().get_texts()]
    assert legend.endswith("† in progress, 1 object so far"), "while its evaluate runs, it is not stopped"


def test_the_cells_of_a_stopped_evaluation_are_never_a_columns_best(tmp_path: Path) -> None:
    stopped = write_results(tmp_path / "stopped", {"a": EASY}, complete=False)
    done = write_results(tmp_path / "done", {"a": EASY, "b": EASY, "c": HARD})
    other = write_results(tmp_path / "other", {"a": EASY, "b": HARD, "c": HARD})
    result = run("report", stopped, done, other, "--labels", "stopped,done,other", "--miou-at", "1")
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    assert rows[1][2:] == ["1.00*", "1.00*", "95.00*"]
    assert rows[2][2:] == ["**2.00**", "**2.00**", "**66.67**"]
    assert rows[3][2:] == ["3.00", "3.00", "38.33"]


@pytest.mark.parametrize(
    ("other", "cells"),
    [
        # A 2-click budget caps the NoC at 2: its 2.00 was the column's best beside 3.00 measured over 4 clicks.
        ({"max_clicks": 2}, ["2.00", "2.00", "**95.00**"]),
        ({"image_roots": {"grabcut": "/data/GrabCut-edited"}}, ["2.00", "2.00", "95.00"]),
        ({"protocol": "iSegProbe"}, ["2.00", "2.00", "95.00"]),
        ({"flip": False}, ["**2.00**", "**2.00**", "**95.00**"]),  # the same objects, another setting: compared
    ],
)
def test_no_cell_is_a_columns_best_among_rows_that_do_not_compare(tmp_path: Path, other, cells) -> None:
    """NoC of different click budgets, and any cell of other objects or another protocol, do not compare: the notes
    said so, but one of them was still in bold as the best."""
    write_results(tmp_path / "a", {"a": [0.5, 0.6, 0.9, 0.95]}, image_roots={"grabcut": "/data/GrabCut"})
    curve = [0.1, 0.95] if "max_clicks" in other else [0.1, 0.95, 0.96, 0.97]
    write_results(tmp_path / "b", {"a": curve}, **{"image_roots": {"grabcut": "/data/GrabCut"}, **other})
    result = run("report", tmp_path / "a", tmp_path / "b", "--labels", "a,b", "--miou-at", "2")
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    assert rows[1][2:] == ["3.00", "3.00", "60.00"]
    assert rows[2][2:] == cells


def test_a_report_notes_the_settings_its_labels_hide(tmp_path: Path) -> None:
    curve = {"a": EASY}
    folders = [
        write_results(tmp_path / "flip", curve),
        write_results(tmp_path / "no_flip", curve, flip=False),
        write_results(tmp_path / "strict", curve, threshold=0.4),
    ]
    result = run("report", *folders, "--labels", "A,B,C")
    assert result.exit_code == 0, result.output
    assert (
        "rows were evaluated with different settings (A: flip, threshold 0.5; B: no flip, threshold 0.5; C: flip, "
        "threshold 0.4), so their differences are not the probes'"
    ) in result.output.strip().split("\n\n")
    online = run("report", folders[0], write_results(tmp_path / "online", curve, zoom_in=True, online=True))
    assert "settings (vit_small_patch14_dinov2 + lift + after_backbone (no zoom-in, cached): no zoom-in, cached; " in (
        online.output
    ), "default labels name the same settings"
    same = run("report", folders[0], write_results(tmp_path / "again", curve), "--labels", "A,B")
    assert same.exit_code == 0 and "different settings" not in same.output, same.output


def test_rows_of_one_dataset_read_from_different_folders_are_noted(tmp_path: Path) -> None:
    """Two custom folders share a dataset's name and so a column: one cell was that column's best, without a word."""
    first = write_results(tmp_path / "first", {"a": EASY}, image_roots={"grabcut": "/data/setA"})
    second = write_results(tmp_path / "second", {"a": HARD}, image_roots={"grabcut": "/data/setB"})
    same = write_results(tmp_path / "same", {"a": HARD}, image_roots={"grabcut": "/data/setA"})
    before = write_results(tmp_path / "before", {"a": HARD})  # written before the folders were recorded
    result = run("report", first, second, "--labels", "first,second")
    assert result.exit_code == 0, result.output
    assert (
        "grabcut: rows read its images from different folders (first: /data/setA, second: /data/setB); unless these "
        "hold the same images, their numbers do not compare"
    ) in result.output
    quiet = run("report", first, same, before, "--labels", "first,same,before")
    assert quiet.exit_code == 0 and "different folders" not in quiet.output, quiet.output


def test_a_bar_in_a_label_or_name_stays_inside_its_cell(tmp_path: Path) -> None:
    folders = [write_results(tmp_path / "a", {"a": EASY}), write_results(tmp_path / "b", {"a": HARD})]
    result = run("report", *folders, "--labels", "lift | 448 px,bilinear")
    assert result.exit_code == 0, result.output
    assert [row[:2] for row in table_rows(result.output)] == [
        ["probe", "protocol"],
        ["lift \0 448 px", "cache"],
        ["bilinear", "cache"],
    ]
    assert markdown_table([["a|b", "c"], ["d", "e|f"]]) == "| a\\|b |    c |\n|------|-----:|\n| d    | e\\|f |"


def test_an_miou_column_past_the_clicks_made_says_why_it_is_empty(tmp_path: Path) -> None:
    """`--miou-at 1000` printed a column of `-` and nothing else."""
    folder = write_results(tmp_path / "run", {"a": EASY})
    result = run("report", folder, "--miou-at", "1000")
    assert result.exit_code == 0, result.output
    assert table_rows(result.output)[1][-1] == "-"
    assert "- in mIoU@1000: the curve stops before 1000 clicks (" in result.output
    assert "grabcut: 4 clicks)" in result.output
    assert "the curve stops" not in run("report", folder, "--miou-at", "4").output


def test_more_evaluations_than_one_figure_tells_apart_are_refused(tmp_path: Path) -> None:
    """Three hundred results folders drew a figure 15000 pixels high whose axes had collapsed to nothing, with
    matplotlib's warnings; past forty, two curves shared a colour and a marker."""
    folders = [write_results(tmp_path / f"run{index}", {"a": EASY}) for index in range(41)]
    result = run("plot", "iou-vs-clicks", *folders, "--out", tmp_path / "curves.png")
    assert result.exit_code == 1
    assert "41 evaluations in one figure: past 40, two curves share a colour and a marker" in result.output
    assert "Traceback" not in result.output and not list(tmp_path.glob("curves.*"))
    assert run("plot", "iou-vs-clicks", *folders[:40], "--out", tmp_path / "curves.png").exit_code == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["plot", "predictions", "{results}", "--object", "a", "--out", "p.png/"], "--out p.png/: ends in a path"),
        (["plot", "iou-vs-clicks", "{results}", "--out", "figs/"], "--out figs/: ends in a path separator"),
        (["plot", "features", "--store", "{store}", "--out", "x.txt"], "ends in .png, or in no suffix, not .txt"),
        (["plot", "features", "--store", "{store}", "--out", "panels/"], "--out panels/: ends in a path separator"),
        (["report", "{results}", "--out", "rep/"], "--out rep/: ends in a path separator"),
    ],
    ids=[
        "predictions-separator",
        "curves-separator",
        "features-txt",
        "features-separator",
        "report-separator",
    ],
)
def test_an_out_that_names_no_file_it_would_write_is_refused(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arguments: list[str], message: str
) -> None:
    results = write_results(tmp_path / "results", {"a": EASY})
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.iterdir())
    result = run(*(argument.format(results=results, store=store) for argument in arguments))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert message in result.output, result.output
    assert sorted(tmp_path.iterdir()) == before, "nothing written"


def test_one_upsampler_given_two_weights_files_is_refused(store: Path, tmp_path: Path) -> None:
    """The later file was drawn and the earlier never read, without a word."""
    weights = ["--weights", "lift=a.pth", "--weights", "lift=b.pth"]
    result = run("plot", "features", "--store", store, "--upsamplers", "lift", *weights, "--out", tmp_path / "p")
    assert result.exit_code == 1 and "--weights: lift is given twice (a.pth and b.pth); keep one" in result.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("listed", "message"),
    [
        (",,", "an empty name between commas"),
        ("bilinear, ,lift", "an empty name"),
        ("bilinear,bilinear", "bilinear listed twice"),
    ],
)
def test_an_upsampler_list_with_an_empty_or_repeated_name_is_refused(store: Path, tmp_path: Path, listed, message):
    """`,,` drew no upsampler panel and `bilinear,bilinear` one twice, without a word."""
    result = run("plot", "features", "--store", store, "--upsamplers", listed, "--out", tmp_path / "p")
    assert result.exit_code == 1 and message in result.output, result.output
    assert not list(tmp_path.iterdir())


def test_a_figure_path_ends_in_a_suffix_of_its_formats_or_in_none(tmp_path: Path) -> None:
    results = write_results(tmp_path / "results", {"a": EASY})
    for out in ("fig", "fig.png", "fig.svg"):
        result = run("plot", "iou-vs-clicks", results, "--out", tmp_path / out)
        assert result.exit_code == 0, result.output
        assert sorted(path.name for path in tmp_path.glob("fig*")) == ["fig.png", "fig.svg"], out
    upper = tmp_path / "upper"
    assert run("plot", "iou-vs-clicks", results, "--out", upper / "fig.PNG").exit_code == 0
    assert sorted(path.name for path in upper.iterdir()) == ["fig.PNG", "fig.svg"], "the name as given"
    refused = run("plot", "iou-vs-clicks", results, "--out", tmp_path / "plot.final.v2")
    assert refused.exit_code == 1 and isinstance(refused.exception, SystemExit), refused.output
    assert "ends in .png or .svg, or in no suffix, not .v2 (`--out " in refused.output
    assert not list(tmp_path.glob("plot*")), "nothing written"
    for out in ("plot.", ".png"):  # wrote plot..png and .png.png
        refused = run("plot", "iou-vs-clicks", results, "--out", tmp_path / "odd" / out)
        assert refused.exit_code == 1 and "a name that ends in a dot or is a suffix alone" in refused.output
    assert not (tmp_path / "odd").exists()


def test_no_format_of_a_figure_is_written_when_another_ones_path_is_refused(tmp_path: Path) -> None:
    """The PNG was written, then the SVG's path, a folder, failed as an IsADirectoryError: half a pair."""
    results = write_results(tmp_path / "results", {"a": EASY})
    (tmp_path / "clash" / "fig.svg").mkdir(parents=True)
    refused = run("plot", "iou-vs-clicks", results, "--out", tmp_path / "clash" / "fig.png")
    assert refused.exit_code == 1 and isinstance(refused.exception, SystemExit), refused.output
    assert "fig.svg: a folder; give a file's path" in refused.output
    assert not (tmp_path / "clash" / "fig.png").exists()


def test_a_results_json_nested_too_deeply_to_read_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UserError, match="results.json: not an evaluation's results.json"):
        read_results(tmp_path)


def test_features_with_a_nan_are_refused_by_item(store: Path, tmp_path: Path) -> None:
    damaged = shutil.copytree(store, tmp_path / "nan.zarr")
    features = zarr.open_group(str(damaged), mode="r+")["features"]
    entry = features[3]
    entry[0, 0, 0, 0] = np.nan
    features[3] = entry
    result = run("plot", "features", "--store", damaged, "--item", 3, "--out", tmp_path / "f.png")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"{damaged}: item 3 has non-finite features" in result.output
    assert f"`isegprobe cache verify {damaged}`" in result.output


def test_a_store_of_one_token_per_image_is_refused_by_its_grid(tmp_path: Path) -> None:
    small = builtin_store(tmp_path, size=14, views="identity")
    result = run("plot", "features", "--store", small, "--out", tmp_path / "f.png")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"{small}: item 0: its image covers 1x1 tokens of the store's 1x1 feature grid" in result.output
