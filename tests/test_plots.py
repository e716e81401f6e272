"""`isegprobe plot` and `isegprobe report`: curves, feature pictures and tables show the numbers and features they
are drawn from."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.textpath import text_to_path
from stores import builtin_store
from torch import nn

from isegprobe.cache import CachedDataset
from isegprobe.cli import main
from isegprobe.commands.evaluate import interruption_note
from isegprobe.commands.options import results_and_labels
from isegprobe.config_loading import load_train_config
from isegprobe.data import create_dataset
from isegprobe.errors import UserError
from isegprobe.hashing import file_sha256
from isegprobe.inference.clicker import Click
from isegprobe.inference.evaluation import ObjectResult
from isegprobe.inference.report import format_report
from isegprobe.inference.results import ResultsWriter
from isegprobe.inference.visuals import has_overlay, save_overlay
from isegprobe.plots.feature_panels import feature_panels, named_upsamplers, open_item
from isegprobe.plots.feature_pca import PcaColours
from isegprobe.plots.iou_vs_clicks import (
    LEGEND_FONT,
    LEGEND_TEXT_SHARE,
    PANEL_SIZE,
    EvaluationCurves,
    evaluation_curves,
    iou_vs_clicks_figure,
    read_evaluation,
)
from isegprobe.training import train

RUN_INFO = {"featurizer": "vit_small_patch14_dinov2", "upsampler": "lift", "fusion": "after_backbone"}


def write_results(
    folder: Path, curves: dict[str, list[float]], run_info: dict = RUN_INFO, max_clicks: int = 4, complete: bool = True
) -> None:
    writer = ResultsWriter(folder, max_clicks=max_clicks, run_info=run_info)
    for object_id, curve in curves.items():
        writer.add("grabcut", object_id, np.array(curve))
    if complete:
        writer.finish("grabcut")
    writer.write()


def plot(*args: str):
    return CliRunner().invoke(main, ["plot", *args])


def test_curves_are_the_evaluations_miou_and_labels_carry_their_noc(tmp_path: Path) -> None:
    # Object a reaches 85 % at click 2 and 90 % at click 3; object b reaches both at click 4: NoC@85 3, NoC@90 3.5.
    write_results(tmp_path / "lift", {"a": [0.5, 0.86, 0.91, 0.95], "b": [0.1, 0.2, 0.3, 0.92]})
    write_results(tmp_path / "old", {"a": [0.2, 0.4, 0.6, 0.8]}, run_info={"featurizer": "vit_small_patch14_dinov2"})

    evaluation = read_evaluation(tmp_path / "lift")
    np.testing.assert_allclose(evaluation.miou["grabcut"], [0.3, 0.53, 0.605, 0.935], rtol=1e-6)
    assert evaluation.noc["grabcut"] == (3.0, 3.5)
    assert read_evaluation(tmp_path / "old").label == "old", "without the probe's description, the folder names it"

    result = plot("iou-vs-clicks", str(tmp_path / "lift"), str(tmp_path / "old"), "--out", str(tmp_path / "curves.png"))
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(tmp_path / "curves.png")) is not None
    svg = (tmp_path / "curves.svg").read_text()
    assert "vit_small_patch14_dinov2 + lift + after_backbone (NoC@85 3.00, NoC@90 3.50)" in svg
    assert "old (NoC@85 4.00, NoC@90 4.00)" in svg

    result = plot("iou-vs-clicks", str(tmp_path / "lift"), "--labels", "LiFT", "--out", str(tmp_path / "one.png"))
    assert result.exit_code == 0, result.output
    assert "LiFT (NoC@85 3.00" in (tmp_path / "one.svg").read_text()


def test_an_evaluation_keeps_its_colour_and_marker_in_every_panel() -> None:
    only_grabcut = EvaluationCurves(
        "first", {"grabcut": [0.5, 0.9]}, {"grabcut": (2.0, 2.0)}, {"grabcut": 3}, {"grabcut": True}
    )
    both = EvaluationCurves(
        "second",
        {"builtin": [0.4, 0.8], "grabcut": [0.6, 0.95]},
        {"builtin": (2.0, 3.0), "grabcut": (2.0, 2.0)},
        {"builtin": 5, "grabcut": 3},
        {"builtin": True, "grabcut": True},
    )
    figure = iou_vs_clicks_figure([only_grabcut, both])
    styles = {
        (axis.get_title(), line.get_label().split(" (")[0]): (line.get_color(), line.get_marker())
        for axis in figure.axes
        for line in axis.get_lines()
        if not line.get_label().startswith("_")
    }
    assert styles[("grabcut", "second")] == styles[("builtin", "second")]
    assert styles[("grabcut", "first")] != styles[("grabcut", "second")]


def test_bad_results_folders_and_labels_are_refused_by_name(tmp_path: Path) -> None:
    write_results(tmp_path / "lift", {"a": [0.5, 0.86, 0.91, 0.95]})
    (tmp_path / "empty").mkdir()
    result = plot("iou-vs-clicks", str(tmp_path / "empty"))
    assert result.exit_code == 1 and "empty: no results.json" in result.output
    result = plot("iou-vs-clicks", str(tmp_path / "lift"), "--labels", "a,b")
    assert result.exit_code == 1 and "--labels gives 2 labels for 1 RESULTS folders" in result.output
    write_results(tmp_path / "other", {"a": [0.5, 0.86, 0.91, 0.95]})
    result = plot("iou-vs-clicks", str(tmp_path / "lift"), str(tmp_path / "other"), "--labels", "a, ")
    assert result.exit_code == 1 and "--labels 'a, ': label 2 is empty" in result.output
    result = plot("iou-vs-clicks", str(tmp_path / "lift"), str(tmp_path / "other"), "--labels", "a\nb,c")
    assert result.exit_code == 1 and "label 1 holds a line break, which would split its table row" in result.output
    result = plot("iou-vs-clicks", str(tmp_path / "lift"), str(tmp_path / "lift" / "."))
    assert result.exit_code == 1 and "is given twice: its rows and curves would be indistinguishable" in result.output
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text(json.dumps({"datasets": {"grabcut": {}}}))
    with pytest.raises(UserError, match="not an evaluation's results.json"):
        read_evaluation(tmp_path / "broken")
    edited = json.loads((tmp_path / "lift" / "results.json").read_text())
    edited["datasets"]["grabcut"]["NoC@85"] = "abc"
    (tmp_path / "lift" / "results.json").write_text(json.dumps(edited))
    result = plot("iou-vs-clicks", str(tmp_path / "lift"))
    assert result.exit_code == 1 and "(grabcut/NoC@85 not numbers of clicks" in result.output, result.output
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "results.json").write_text(json.dumps({**edited, "datasets": {}}))
    result = plot("iou-vs-clicks", str(tmp_path / "other"), str(tmp_path / "none"))
    assert result.exit_code == 1 and f"{tmp_path / 'none'}: results.json holds no dataset's results" in result.output
    (tmp_path / "lift" / "results.json").write_bytes(b"\xff\xfe{not text")
    result = plot("iou-vs-clicks", str(tmp_path / "lift"))
    assert result.exit_code == 1 and "not an evaluation's results.json (UnicodeDecodeError" in result.output


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (lambda summary: summary.update(complete="false"), "grabcut/complete is 'false', not true or false"),
        (
            lambda summary: summary.update({"NoC@85": 50, "NoC@90": 50}),
            "grabcut/NoC@85, NoC@90 above max_clicks 4",
        ),
        (lambda summary: summary.update({"mIoU@k": [0.5] * 20}), "mIoU@k has 20 clicks, more than max_clicks 4"),
        (lambda summary: summary.update({"NoC@85": 3, "NoC@90": 2}), "grabcut/NoC@90 2 below its NoC@85 3"),
        (lambda summary: summary.update(max_clicks=3), "grabcut/max_clicks 3 other than the evaluation's 4"),
    ],
)
def test_results_whose_values_contradict_each_other_are_refused(tmp_path: Path, edit, said) -> None:
    """Each value of the right kind, together what no evaluation writes: "false" as text counted as finished, and
    a 20-value curve of a 4-click run gave a table its mIoU@5."""
    write_results(tmp_path / "edited", {"a": [0.5, 0.86, 0.91, 0.95]})
    document = json.loads((tmp_path / "edited" / "results.json").read_text())
    edit(document["datasets"]["grabcut"])
    (tmp_path / "edited" / "results.json").write_text(json.dumps(document))
    for command in (["report"], ["plot", "iou-vs-clicks"]):
        result = CliRunner().invoke(main, [*command, str(tmp_path / "edited")])
        assert result.exit_code == 1 and said in result.output, result.output


def test_pca_colours_recover_the_three_strongest_feature_directions() -> None:
    # Three uncorrelated zero-mean patterns of distinct strength, embedded in 32 channels with a little noise.
    generator = torch.Generator().manual_seed(0)
    patterns = torch.randn(144, 3, generator=generator)
    patterns = torch.linalg.qr(patterns - patterns.mean(dim=0)).Q * torch.tensor([3.0, 2.0, 1.0])
    signals = patterns.T.reshape(3, 12, 12)
    basis = torch.linalg.qr(torch.randn(32, 3, generator=generator)).Q  # orthonormal [32, 3]
    features = torch.einsum("ck,khw->chw", basis, signals) + 1e-3 * torch.randn(32, 12, 12, generator=generator)
    picture = PcaColours.fit(features).rgb(features).astype(np.float64)
    for channel in range(3):
        correlation = np.corrcoef(picture[..., channel].ravel(), signals[channel].numpy().ravel())[0, 1]
        assert abs(correlation) > 0.95, (channel, correlation)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return builtin_store(tmp_path_factory.mktemp("cache"), size=112)


class DoubledNearest(nn.Module):
    """An upsampler whose output leaves the featurizer's feature space: nearest-neighbour, times two."""

    def forward(self, features: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        return 2 * F.interpolate(features, size=guidance.shape[-2:], mode="nearest")


def test_every_panel_is_drawn_through_the_low_res_colour_map(store: Path) -> None:
    # Nearest-neighbour upsampling only repeats tokens, so through the shared colour map each block of its picture
    # has exactly its token's colour; features scaled by two must change colour (a map refitted per panel would
    # hide that).
    entry = open_item(store, 2, "identity")
    upsamplers = [*named_upsamplers(["nearest", "bilinear"], {}, 384), ("doubled", DoubledNearest())]
    panels = feature_panels(entry, upsamplers, torch.device("cpu"))
    (low_caption, low_res), (_, nearest), (_, bilinear), (_, doubled) = panels.pictures
    assert low_caption == "low-res 8x8" and low_res.shape == (8, 8, 3)
    assert nearest.shape == bilinear.shape == panels.image.shape == (112, 112, 3)
    np.testing.assert_array_equal(nearest, low_res.repeat(14, axis=0).repeat(14, axis=1))
    assert not np.array_equal(bilinear, nearest)
    features = entry[0]["features"].float()
    expected = PcaColours.fit(features).rgb(2 * features).repeat(14, axis=0).repeat(14, axis=1)
    np.testing.assert_array_equal(doubled, expected)
    assert not np.array_equal(doubled, nearest)

    # Each panel through its own PCA: scaling by two no longer shows, the structure does.
    own = feature_panels(entry, upsamplers, torch.device("cpu"), shared=False)
    (_, own_low), (_, own_nearest), _, (_, own_doubled) = own.pictures
    np.testing.assert_array_equal(own_low, low_res)
    assert np.abs(own_doubled.astype(int) - own_nearest.astype(int)).max() <= 1
    assert panels.title.endswith(f"{entry.item_ids[2]} (identity view)")


def test_features_command_draws_a_trained_probes_upsampler_and_refuses_what_would_mislead(
    store: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    config = load_train_config("quickstart", ["schedule.max_iters=0", "model.upsampler.name=bilinear"])
    train(config, CachedDataset(store), run_dir, device="cpu", progress=False)
    out = tmp_path / "features.png"
    common = ["--store", str(store), "--device", "cpu", "--out", str(out)]
    result = plot("features", *common, "--upsamplers", "bicubic", "--checkpoint", str(run_dir))
    assert result.exit_code == 0, result.output
    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[1] > 3 * picture.shape[0], "four panels side by side"

    result = plot("features", *common, "--upsamplers", "lift")
    assert result.exit_code == 1 and "--weights lift=PATH" in result.output
    result = plot("features", *common, "--weights", "lift=x.pth")
    assert result.exit_code == 1 and "--weights given for lift" in result.output
    result = plot("features", *common, "--item", "99")
    assert result.exit_code == 1 and "--item 99 is not in the store" in result.output


def report(*args: str):
    return CliRunner().invoke(main, ["report", *args])


def test_report_bolds_the_best_probe_per_column(tmp_path: Path) -> None:
    write_results(tmp_path / "lift", {"a": [0.5, 0.86, 0.91, 0.95], "b": [0.1, 0.2, 0.3, 0.92]})
    write_results(tmp_path / "bilinear", {"a": [0.6, 0.7, 0.8, 0.9], "b": [0.2, 0.3, 0.4, 0.5]})
    folders = [str(tmp_path / "lift"), str(tmp_path / "bilinear")]
    table = tmp_path / "tables" / "new" / "table.md"  # folders that do not exist yet are made
    result = report(*folders, "--labels", "LiFT,bilinear", "--miou-at", "2", "--out", str(table))
    assert result.exit_code == 0, result.output
    # LiFT: NoC@85 (2 + 4) / 2, NoC@90 (3 + 4) / 2, mIoU@2 53 %; bilinear: (4 + 4) / 2 twice, mIoU@2 50 %.
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in result.output.splitlines()]
    assert rows[0] == ["probe", "protocol", "grabcut NoC@85", "grabcut NoC@90", "grabcut mIoU@2 (%)"]
    assert rows[2] == ["LiFT", "cache", "**3.00**", "**3.50**", "**53.00**"]
    assert rows[3] == ["bilinear", "cache", "4.00", "4.00", "50.00"]
    assert table.read_text() == result.output

    result = report(*folders, "--format", "csv")
    assert result.stdout.splitlines() == [
        "probe,protocol,grabcut NoC@85,grabcut NoC@90,grabcut mIoU@5 (%),grabcut complete",
        "vit_small_patch14_dinov2 + lift + after_backbone (lift),cache,3.0000,3.5000,,yes",
        "vit_small_patch14_dinov2 + lift + after_backbone (bilinear),cache,4.0000,4.0000,,yes",
    ]
    assert result.stderr.startswith("- in mIoU@5: the curve stops before 5 clicks (vit_small_patch14_dinov2 + lift")


def test_a_csv_report_says_which_rows_are_complete_and_gives_its_notes_on_stderr(tmp_path: Path) -> None:
    """The CSV left out the marks and notes that the Markdown table has: a row of 8 of 50 objects read as final."""
    write_results(tmp_path / "done", {"a": [0.5, 0.86, 0.91, 0.95], "b": [0.1, 0.2, 0.3, 0.92]})
    write_results(tmp_path / "stopped", {"a": [0.6, 0.7, 0.8, 0.9]}, complete=False)
    result = report(str(tmp_path / "done"), str(tmp_path / "stopped"), "--labels", "done,stopped", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(result.stdout.splitlines()))
    assert rows[0][-1] == "grabcut complete" and [row[-1] for row in rows[1:]] == ["yes", "no"]
    assert "* evaluation stopped before every object was done" in result.stderr
    assert "measured different numbers of objects" in result.stderr


def report_row_labels(*folders: str) -> list[str]:
    """The probe column of `report --format csv` over `folders`."""
    result = report(*folders, "--format", "csv")
    assert result.exit_code == 0, result.output
    return [row[0] for row in csv.reader(result.stdout.splitlines()[1:])]


def test_default_labels_tell_apart_evaluations_of_the_same_probe(tmp_path: Path) -> None:
    """Two evaluations of one probe are named by the protocol settings that differ; the same protocol twice by the
    checkpoints' steps (a run's best and last checkpoints), and where those are the same too (two training runs of
    one recipe) by the results folders; a probe unlike the others keeps its plain name."""
    curve = {"a": [0.5, 0.86, 0.91, 0.95]}
    protocol = {"flip": True, "zoom_in": False, "online": False, "threshold": 0.5, "checkpoint_step": 38}
    write_results(tmp_path / "zoom", curve, {**RUN_INFO, **protocol, "zoom_in": True})
    write_results(tmp_path / "run1", curve, {**RUN_INFO, **protocol})
    write_results(tmp_path / "run2", curve, {**RUN_INFO, **protocol})
    write_results(tmp_path / "best", curve, {**RUN_INFO, **protocol, "checkpoint_step": 6})
    write_results(tmp_path / "strict", curve, {**RUN_INFO, **protocol, "threshold": 0.49})
    write_results(tmp_path / "other", curve, {**RUN_INFO, **protocol, "upsampler": "bilinear"})
    folders = [str(tmp_path / name) for name in ("zoom", "run1", "run2", "best", "strict", "other")]
    lift = "vit_small_patch14_dinov2 + lift + after_backbone"
    assert report_row_labels(*folders) == [
        f"{lift} (zoom-in, threshold 0.5)",
        f"{lift} (no zoom-in, threshold 0.5, step 38, run1)",
        f"{lift} (no zoom-in, threshold 0.5, step 38, run2)",
        f"{lift} (no zoom-in, threshold 0.5, step 6)",
        f"{lift} (no zoom-in, threshold 0.49)",
        "vit_small_patch14_dinov2 + bilinear + after_backbone",
    ]
    result = plot("iou-vs-clicks", *folders[:2], "--out", str(tmp_path / "curves.png"))
    assert result.exit_code == 0, result.output
    svg = (tmp_path / "curves.svg").read_text()
    assert f"{lift} (zoom-in)" in svg and "(NoC@85 2.00, NoC@90 3.00)" in svg, "a long label wraps before its NoC"


def test_default_labels_name_the_training_runs_before_their_steps(tmp_path: Path) -> None:
    """Checkpoints of two training runs are named by their run folders (their steps would read as two checkpoints of
    one run); two checkpoints of one run by their steps."""
    curve = {"a": [0.5, 0.86, 0.91, 0.95]}
    checkpoints = {
        "first": (tmp_path / "runs" / "lift_a" / "last.safetensors", 200),
        "second": (tmp_path / "runs" / "lift_b" / "last.safetensors", 156),
        "early": (tmp_path / "runs" / "lift_b" / "best.safetensors", 40),
    }
    for name, (checkpoint, step) in checkpoints.items():
        write_results(tmp_path / name, curve, {**RUN_INFO, "checkpoint": str(checkpoint), "checkpoint_step": step})
    lift = "vit_small_patch14_dinov2 + lift + after_backbone"
    assert report_row_labels(*(str(tmp_path / name) for name in checkpoints)) == [
        f"{lift} (run lift_a)",
        f"{lift} (run lift_b, step 156)",
        f"{lift} (run lift_b, step 40)",
    ]


def test_a_run_folder_named_run_is_named_with_its_parent(tmp_path: Path) -> None:
    """The quickstart trains into QUICKSTART/run: its probe beside another run of the recipe read "(run run)"."""
    curve = {"a": [0.5, 0.86, 0.91, 0.95]}
    runs = {"quick": tmp_path / "quickstart_cpu" / "run", "mine": tmp_path / "runs" / "mine"}
    for name, run in runs.items():
        write_results(tmp_path / name, curve, {**RUN_INFO, "checkpoint": str(run / "best.safetensors")})
    lift = "vit_small_patch14_dinov2 + lift + after_backbone"
    assert report_row_labels(str(tmp_path / "quick"), str(tmp_path / "mine")) == [
        f"{lift} (run quickstart_cpu/run)",
        f"{lift} (run mine)",
    ]


def test_a_column_whose_rows_all_read_the_same_has_no_best_cell(tmp_path: Path) -> None:
    """Two probes that both reach no IoU of 90 % in the clicks given tie at the budget: neither is bolded there."""
    write_results(tmp_path / "lift", {"a": [0.5, 0.86, 0.88, 0.89]})
    write_results(tmp_path / "bilinear", {"a": [0.5, 0.7, 0.8, 0.86]})
    result = report(str(tmp_path / "lift"), str(tmp_path / "bilinear"), "--labels", "lift,bilinear")
    assert result.exit_code == 0, result.output
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in result.output.splitlines()[2:4]]
    assert [row[2:4] for row in rows] == [["**2.00**", "4.00"], ["4.00", "4.00"]]


def test_report_says_which_cells_do_not_compare(tmp_path: Path) -> None:
    write_results(tmp_path / "stopped", {"a": [0.5, 0.86, 0.91, 0.95]}, complete=False)
    write_results(tmp_path / "short", {"a": [0.9, 0.9], "b": [0.9, 0.9]}, max_clicks=2)
    result = report(str(tmp_path / "stopped"), str(tmp_path / "short"), "--labels", "stopped,short")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [cell.strip() for cell in lines[2].split("|")[1:-1]] == ["stopped", "cache", "2.00*", "3.00*", "-"]
    assert "* evaluation stopped before every object was done" in lines
    assert any(line.startswith("rows had different click budgets (stopped: 4, short: 2)") for line in lines)
    assert "grabcut: rows measured different numbers of objects (stopped: 1, short: 2), so they do not compare" in lines
    assert lines[4] == "", "a blank line ends the Markdown table before the notes"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The results folder of an evaluation (6 clicks, --flip) of a briefly trained probe on the built-in store."""
    folder = tmp_path_factory.mktemp("evaluated")
    store = builtin_store(folder / "cache", size=56)
    config = load_train_config("quickstart", ["schedule.max_iters=3"])
    training_store = CachedDataset(builtin_store(folder / "cache", split="train", size=56))
    train(config, training_store, folder / "run", device="cpu", progress=False)
    arguments = ["evaluate", "--checkpoint", str(folder / "run"), "--store", str(store), "--max-clicks", "6"]
    result = CliRunner().invoke(main, [*arguments, "--flip", "--out", str(folder / "results")])
    assert result.exit_code == 0, result.output
    return folder / "results"


def edited_results(evaluated: Path, folder: Path, **changes) -> Path:
    """A copy of the evaluation's results in `folder`, with `changes` made to its results.json."""
    shutil.copytree(evaluated, folder, ignore=shutil.ignore_patterns("predictions", "*.lock"))
    path = folder / "results.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return folder


def test_predictions_replay_an_object_of_an_evaluation_and_match_its_recorded_curve(
    evaluated: Path, tmp_path: Path
) -> None:
    result = plot("predictions", str(evaluated), "--object", "test_002_1")
    assert result.exit_code == 0, result.output
    assert "largest difference over the 6 clicks 0" in result.output and "warning" not in result.output
    picture = cv2.imread(str(evaluated / "predictions" / "builtin_test_002_1.png"))
    height, width = create_dataset("builtin", split="test")[2].image.shape[:2]
    assert picture.shape[0] > height and picture.shape[1] > 4 * width, "panels after 1, 3, 5 and 6 clicks"

    unknown = plot("predictions", str(evaluated), "--object", "test_002_9")
    assert unknown.exit_code == 1 and "--object 'test_002_9': not among the 26 objects of builtin" in unknown.output
    other = plot("predictions", str(evaluated), "--object", "test_002_1", "--dataset", "grabcut")
    assert other.exit_code == 1 and "--dataset grabcut: the evaluation has builtin, not it" in other.output
    weights = tmp_path / "last.safetensors"
    shutil.copyfile(json.loads((evaluated / "results.json").read_text())["checkpoint"], weights)
    results = edited_results(evaluated, tmp_path / "results", checkpoint=str(weights))
    weights.write_bytes(weights.read_bytes() + b" ")
    changed = plot("predictions", str(results), "--object", "test_002_1")
    assert changed.exit_code == 1 and "changed since the evaluation" in changed.output


def test_a_replay_that_differs_names_edited_settings_among_the_causes(evaluated: Path, tmp_path: Path) -> None:
    """A results.json whose threshold was edited replayed 0.46 IoU away from its curve, and the warning blamed only
    the store, the dataset or the device."""
    results = edited_results(evaluated, tmp_path / "results", threshold=0.02)
    result = plot("predictions", str(results), "--object", "test_002_1", "--out", str(tmp_path / "p.png"))
    assert result.exit_code == 0, result.output
    assert "the settings in its results.json (threshold, flip, zoom-in) were edited" in result.stderr
    assert "the picture shows the replay" in result.stderr


def test_predictions_refuse_a_store_extracted_again_since_the_evaluation(evaluated: Path, tmp_path: Path) -> None:
    """The replay would read other features than the evaluation did, and draw them as its."""
    results = edited_results(evaluated, tmp_path / "results", source_fingerprints={"builtin": "0" * 64})
    store = json.loads((results / "results.json").read_text())["sources"]["builtin"]
    result = plot("predictions", str(results), "--object", "test_002_1", "--out", str(tmp_path / "p.png"))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"{store}: not the store this evaluation read: extracted again since, its fingerprint differs" in (
        result.output
    )
    assert not (tmp_path / "p.png").exists()


def test_predictions_of_an_object_its_store_no_longer_holds_name_it(evaluated: Path, tmp_path: Path) -> None:
    results = edited_results(evaluated, tmp_path / "results")
    with np.load(results / "ious.npz") as arrays:
        curves = dict(arrays)
    curves["builtin/ids"] = np.append(curves["builtin/ids"], "test_002_9")
    curves["builtin/ious"] = np.concatenate([curves["builtin/ious"], curves["builtin/ious"][:1]])
    np.savez(results / "ious.npz", **curves)
    result = plot("predictions", str(results), "--object", "test_002_9")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "no object test_002_9 of builtin there; the store or dataset folder changed since" in result.output


def test_predictions_replay_an_online_evaluation_from_its_dataset(tmp_path: Path) -> None:
    store = builtin_store(tmp_path / "cache", split="train", size=56)
    train(load_train_config("quickstart", ["schedule.max_iters=2"]), CachedDataset(store), tmp_path / "run",
          device="cpu", progress=False)  # fmt: skip
    arguments = ["evaluate", "--checkpoint", str(tmp_path / "run"), "--online", "--datasets", "builtin"]
    evaluated = CliRunner().invoke(main, [*arguments, "--max-clicks", "4", "--out", str(tmp_path / "results")])
    assert evaluated.exit_code == 0, evaluated.output
    document = json.loads((tmp_path / "results" / "results.json").read_text())
    assert document["online_sources"] == {"builtin": {"split": "test", "root": None}}

    result = plot("predictions", str(tmp_path / "results"), "--object", "test_001_1", "--out", str(tmp_path / "p.png"))
    assert result.exit_code == 0, result.output
    assert "largest difference over the 4 clicks 0" in result.output
    assert cv2.imread(str(tmp_path / "p.png")) is not None


def test_long_default_labels_wrap_inside_the_figure_and_keep_their_noc(tmp_path: Path, recwarn) -> None:
    """Default labels of evaluations of one probe read `featurizer + upsampler + fusion (protocol words, folder)`:
    the legend below each panel wraps them instead of squeezing the axes away (matplotlib's "constrained_layout not
    applied"), and stays inside the picture with every NoC."""
    protocol = {"flip": True, "zoom_in": False, "online": False, "threshold": 0.5}
    folders = []
    for index in range(4):
        folder = tmp_path / f"sbd_dinov2_featup_jbu_after_backbone_run{index}_with_a_longer_name_than_most_would_give"
        write_results(folder, {"a": [0.5, 0.86, 0.91, 0.95]}, {**RUN_INFO, **protocol, "upsampler": "featup_jbu"})
        folders.append(folder)
    evaluations = [evaluation_curves(document, label) for label, document in results_and_labels(tuple(folders), None)]
    assert all(len(evaluation.label) > 110 for evaluation in evaluations), [e.label for e in evaluations]

    figure = iou_vs_clicks_figure(evaluations)
    figure.canvas = FigureCanvasAgg(figure)
    figure.canvas.draw()
    assert not [warning for warning in recwarn if "constrained_layout not applied" in str(warning.message)]
    (axis,) = figure.axes
    legend = axis.get_legend()
    inside = figure.bbox.padded(0.5)
    assert inside.contains(*legend.get_window_extent().p0) and inside.contains(*legend.get_window_extent().p1)
    assert axis.get_window_extent().height > 0.4 * figure.bbox.height, "the axes keep their room"
    texts = [text.get_text() for text in legend.get_texts()]
    assert all(text.endswith("(NoC@85 2.00, NoC@90 3.00)") and "\n" in text for text in texts)
    assert ["".join(text.split()) for text in texts] == [
        "".join(f"{evaluation.label} (NoC@85 2.00, NoC@90 3.00)".split()) for evaluation in evaluations
    ], "the labels, only broken into lines"


def many_curves(count: int, words: str) -> list[EvaluationCurves]:
    """`count` evaluations of one dataset, each labelled `words` and its number."""
    curve, noc = list(np.linspace(0.3, 0.9, 20)), (3.0, 5.0)
    return [
        EvaluationCurves(f"{words} {index}", {"a": curve}, {"a": noc}, {"a": 50}, {"a": True}) for index in range(count)
    ]


def test_forty_labels_of_several_lines_stay_inside_the_figure() -> None:
    """Counted at the font's size a line, the legend's further lines were short by a fifth of a line each: forty
    labels of three or four lines ran off the picture's bottom."""
    words = " ".join(["sbd_dinov2_featup_jbu_after_backbone_run_with_a_longer_name flip threshold 0.5 and words"] * 2)
    figure = iou_vs_clicks_figure(many_curves(40, words))
    figure.canvas = FigureCanvasAgg(figure)
    figure.canvas.draw()
    legend = figure.axes[0].get_legend()
    assert all(text.get_text().count("\n") >= 2 for text in legend.get_texts())
    assert figure.bbox.contains(*legend.get_window_extent().p0)


def test_a_report_tells_an_evaluation_in_progress_from_a_stopped_one(tmp_path: Path) -> None:
    """The lock an `isegprobe evaluate` holds on its results folder while it runs, taken by a live process."""
    write_results(tmp_path / "running", {"a": [0.5, 0.86, 0.91, 0.95]}, complete=False)
    write_results(tmp_path / "stopped", {"a": [0.5, 0.86, 0.91, 0.95]}, complete=False)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / "running")], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline() == b"held\n"
        result = report(str(tmp_path / "running"), str(tmp_path / "stopped"), "--labels", "running,stopped")
    finally:
        holder.communicate(b"\n", timeout=30)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [cell.strip() for cell in lines[2].split("|")[1:-1]][:3] == ["running", "cache", "2.00†"]
    assert [cell.strip() for cell in lines[3].split("|")[1:-1]][:3] == ["stopped", "cache", "2.00*"]
    assert "* evaluation stopped before every object was done" in lines
    (note,) = [line for line in lines if line.startswith("† running: evaluation in progress")]
    assert f"PID {holder.pid} " in note

    after = report(str(tmp_path / "running"), "--labels", "running")
    assert "2.00*" in after.stdout and "in progress" not in after.stdout, "its command ended: stopped"


def test_an_evaluation_stopped_before_its_first_batch_says_so_at_ctrl_c_and_in_the_report(tmp_path: Path) -> None:
    """Ctrl-C before the first batch leaves a results.json of no dataset: no object is kept, and a report of it
    would be a row of no cells without a word."""
    write_results(tmp_path / "empty", {})
    write_results(tmp_path / "done", {"a": [0.5, 0.86, 0.91, 0.95]})
    result = report(str(tmp_path / "empty"), str(tmp_path / "done"), "--labels", "empty,done")
    assert result.exit_code == 0, result.output
    assert any(line.startswith("empty: no object evaluated yet") for line in result.stdout.splitlines())
    assert "done: no object" not in result.stdout
    for folder in ("empty", "never-written"):
        assert "holds no object's results yet" in interruption_note(str(tmp_path / folder))
    assert "the objects of the batches finished before it are kept" in interruption_note(str(tmp_path / "done"))


HOLD_LOCK = """
import sys
from pathlib import Path
from isegprobe.locks import exclusive_lock
with exclusive_lock(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_rows_labelled_alike_keep_their_notes_and_marks() -> None:
    """Notes and marks belong to rows, not to labels: two rows that read the same keep apart a 4-click from a
    2-click evaluation, and the one still running from the one stopped."""
    summary = {"NoC@85": 2.0, "NoC@90": 3.0, "mIoU@k": [0.5, 0.86], "num_instances": 1, "complete": False}
    stopped = {"max_clicks": 4, "datasets": {"grabcut": summary}}
    running = {
        "protocol": "ritm",
        "max_clicks": 2,
        "datasets": {"grabcut": {**summary, "NoC@85": 1.0, "NoC@90": 1.0, "mIoU@k": [0.9, 0.9], "num_instances": 2}},
    }
    table = format_report([("x", stopped), ("x", running)], miou_at=2, running={1: "PID 7 isegprobe evaluate"})
    lines = table.splitlines()
    assert [cell.strip() for cell in lines[2].split("|")[1:-1]][2] == "2.00*"
    assert [cell.strip() for cell in lines[3].split("|")[1:-1]][2] == "1.00†", "an unfinished row is never the best"
    assert "† x: evaluation in progress, its numbers cover the objects done so far (PID 7 isegprobe evaluate)" in lines
    assert "rows come from different evaluation protocols (x: cache, x: ritm), so their numbers do not compare" in lines
    assert any(line.startswith("rows had different click budgets (x: 4, x: 2)") for line in lines)
    assert "grabcut: rows measured different numbers of objects (x: 1, x: 2), so they do not compare" in lines


def test_results_folders_of_one_name_get_labels_that_differ_and_repeated_labels_are_refused(tmp_path: Path) -> None:
    write_results(tmp_path / "a" / "results", {"a": [0.5, 0.86, 0.91, 0.95]})
    write_results(tmp_path / "b" / "results", {"a": [0.5, 0.86, 0.91, 0.95], "b": [0.1, 0.2, 0.3, 0.4]})
    folders = [str(tmp_path / "a" / "results"), str(tmp_path / "b" / "results")]
    result = report(*folders)
    assert result.exit_code == 0, result.output
    lift = "vit_small_patch14_dinov2 + lift + after_backbone"
    assert f"grabcut: rows measured different numbers of objects ({lift} (a/results): 1, {lift} (b/results): 2)" in (
        result.output
    )
    for command in (["report"], ["plot", "iou-vs-clicks", "--out", str(tmp_path / "curves.png")]):
        result = CliRunner().invoke(main, [*command, *folders, "--labels", "x, x"])
        assert result.exit_code == 1, result.output
        assert "--labels: 'x' given to more than one RESULTS folder" in result.output


@pytest.mark.parametrize(
    ("arguments", "drawn"),
    [
        (["--labels", "cost $5 vs $10"], "cost $5 vs $10 (NoC@85 2.00"),
        (["--labels", r"$\foo$"], r"$\foo$ (NoC@85 2.00"),
        (["--title", r"$\frac{$"], r"$\frac{$"),
    ],
)
def test_labels_and_titles_are_drawn_as_written(tmp_path: Path, arguments: list[str], drawn: str) -> None:
    """A `$` in a label or title is a dollar, not the start of matplotlib's math (which dropped the dollars and
    spaces of the first and failed on the others)."""
    write_results(tmp_path / "lift", {"a": [0.5, 0.86, 0.91, 0.95]})
    result = plot("iou-vs-clicks", str(tmp_path / "lift"), *arguments, "--out", str(tmp_path / "curves.png"))
    assert result.exit_code == 0, result.output
    assert f">{drawn}" in (tmp_path / "curves.svg").read_text()


def test_featurizer_and_dataset_names_with_dollars_draw_and_wrap_as_measured(tmp_path: Path) -> None:
    run_info = {**RUN_INFO, "featurizer": r"$\foo$ " + "$x$ " * 40}
    writer = ResultsWriter(tmp_path / "dollars", max_clicks=4, run_info=run_info)
    writer.add("$grab$cut", "a", np.array([0.5, 0.86, 0.91, 0.95]))
    writer.write()
    figure = iou_vs_clicks_figure([read_evaluation(tmp_path / "dollars")], title=r"$\frac{$")
    figure.canvas = FigureCanvasAgg(figure)
    figure.canvas.draw()
    (axis,) = figure.axes
    assert axis.get_title() == "$grab$cut"
    (legend_text,) = axis.get_legend().get_texts()
    lines = legend_text.get_text().split("\n")
    assert len(lines) > 2 and lines[0].startswith(r"$\foo$ $x$"), "wrapped, the dollars kept"
    measured = max(text_to_path.get_text_width_height_descent(line, LEGEND_FONT, ismath=False)[0] for line in lines)
    drawn = legend_text.get_window_extent().width * 72 / figure.dpi
    assert measured <= LEGEND_TEXT_SHARE * PANEL_SIZE[0] * 72 and drawn == pytest.approx(measured, rel=0.05)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda document: document["datasets"].update(builtin="NoC@85 NoC@90 mIoU@k"), "(builtin not objects)"),
        (lambda document: document["datasets"].update(builtin=["NoC@85", "NoC@90", "mIoU@k"]), "builtin not objects"),
        (lambda document: document.update(threshold="abc"), "(threshold not numbers from 0 to 1)"),
        (lambda document: document.update(threshold=None), "(threshold not numbers from 0 to 1)"),
        (lambda document: document.update(threshold=1.5), "(threshold not numbers from 0 to 1)"),
        (lambda document: document.update(featurizer=5), "(featurizer not text or null)"),
        (lambda document: document.update(max_clicks=[4]), "(max_clicks not counts of 1 or more)"),
        (lambda document: document["datasets"]["grabcut"].pop("num_instances"), "(no grabcut/num_instances)"),
        (lambda document: document["datasets"]["grabcut"].update(num_instances=[1]), "grabcut/num_instances not"),
        (lambda document: document["datasets"]["grabcut"].update(num_instances=-5), "grabcut/num_instances not"),
        (lambda document: document["datasets"]["grabcut"].update({"mIoU@k": []}), "mIoU@k not lists of one IoU"),
        (lambda document: document["datasets"]["grabcut"].update({"mIoU@k": [0.5, 1.2]}), "mIoU@k not lists of"),
        # A hand-edited NoC of -3 was a column's best, in bold; NaN and infinity went into tables and plots.
        (lambda document: document["datasets"]["grabcut"].update({"NoC@85": -3.0}), "grabcut/NoC@85 not numbers of"),
        (lambda document: document["datasets"]["grabcut"].update({"NoC@90": float("nan")}), "grabcut/NoC@90 not"),
        (lambda document: document["datasets"]["grabcut"].update({"NoC@90": float("inf")}), "grabcut/NoC@90 not"),
    ],
)
def test_damaged_results_are_refused_by_file_and_key(tmp_path: Path, edit, message: str) -> None:
    write_results(tmp_path / "lift", {"a": [0.5, 0.86, 0.91, 0.95]}, {**RUN_INFO, "threshold": 0.5})
    write_results(tmp_path / "other", {"a": [0.5, 0.86, 0.91, 0.95]})
    document = json.loads((tmp_path / "lift" / "results.json").read_text())
    edit(document)
    (tmp_path / "lift" / "results.json").write_text(json.dumps(document))
    folders = [str(tmp_path / "lift"), str(tmp_path / "other")]
    for command in (["report"], ["plot", "iou-vs-clicks", "--out", str(tmp_path / "curves.png")]):
        result = CliRunner().invoke(main, [*command, *folders])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert f"{tmp_path / 'lift' / 'results.json'}: not an evaluation's results.json" in result.output
        assert message in result.output, result.output


def drawn_object(object_id: str) -> ObjectResult:
    """What a replay of one object returns, without a probe to replay it."""
    return ObjectResult(
        id=object_id,
        ious=np.array([0.5, 0.86, 0.91, 0.95], np.float32),
        clicks=[Click(y=8, x=8, is_positive=True)] * 4,
        final_probs=np.zeros((32, 32), np.float32),
        image=np.zeros((32, 32, 3), np.uint8),
        masks={1: np.ones((32, 32), bool), 4: np.ones((32, 32), bool)},
    )


@dataclass
class ReplayableResults:
    """A results folder, and the objects replayed from it so far."""

    folder: Path
    replays: list[list[str]] = field(default_factory=list)


@pytest.fixture
def replayable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ReplayableResults:
    """A results folder whose evaluation `plot predictions` replays (its replay stood in for)."""
    checkpoint = tmp_path / "last.safetensors"
    checkpoint.write_bytes(b"weights")
    replayed = {"checkpoint": str(checkpoint), "checkpoint_sha256": file_sha256(checkpoint), "flip": False}
    run_info = {**RUN_INFO, **replayed, "zoom_in": False, "threshold": 0.5, "sources": {"grabcut": "store"}}
    write_results(tmp_path / "results", {"a": [0.5, 0.86, 0.91, 0.95], "b" * 300: [0.5, 0.86, 0.91, 0.95]}, run_info)
    results = ReplayableResults(tmp_path / "results")

    def replay(request, dataset: str, object_ids: list[str]) -> list[ObjectResult]:
        results.replays.append(object_ids)
        return [drawn_object(object_ids[0])]

    monkeypatch.setattr("isegprobe.plots.predictions.replay_objects", replay)
    return results


def test_predictions_are_written_where_said_or_refused_before_the_replay(
    replayable: ReplayableResults, tmp_path: Path
) -> None:
    result = plot("predictions", str(replayable.folder), "--object", "a", "--out", str(tmp_path / "strip.jpg"))
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(tmp_path / "strip.jpg")) is not None

    result = plot("predictions", str(replayable.folder), "--object", "b" * 300)
    assert result.exit_code == 0, result.output
    (written,) = (replayable.folder / "predictions").iterdir()
    assert written.name.startswith("grabcut_bbb") and len(written.name) <= 200 and cv2.imread(str(written)) is not None
    assert f"wrote {written}" in result.output

    replays = len(replayable.replays)
    for out in ("strip.txt", "strip"):
        result = plot("predictions", str(replayable.folder), "--object", "a", "--out", str(tmp_path / out))
        assert result.exit_code == 1 and f"--out {tmp_path / out}: a picture path ends in .png" in result.output
    assert len(replayable.replays) == replays, "refused before the replay"

    result = plot("predictions", str(replayable.folder), "--object", "a", "--out", "/proc/strip.png")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "/proc/strip.png: cannot write" in result.output and "wrote" not in result.output


def test_predictions_without_the_recorded_curves_say_so(replayable: ReplayableResults) -> None:
    (replayable.folder / "ious.npz").unlink()
    result = plot("predictions", str(replayable.folder), "--object", "a")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"{replayable.folder / 'ious.npz'}: missing or unreadable" in result.output


def test_predictions_of_results_that_do_not_say_how_they_ran_are_refused(tmp_path: Path) -> None:
    write_results(tmp_path / "results", {"a": [0.5, 0.86, 0.91, 0.95]})
    result = plot("predictions", str(tmp_path / "results"), "--object", "a")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "results.json: no checkpoint, flip, zoom_in, threshold: the evaluation cannot be replayed" in result.output


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"sources": None}, "no store recorded for grabcut (sources/grabcut)"),
        ({"online": True, "online_sources": {"grabcut": "data"}}, "online_sources/grabcut is not a split and a root"),
    ],
)
def test_predictions_of_results_without_their_source_are_refused(
    replayable: ReplayableResults, edit: dict, message: str
) -> None:
    path = replayable.folder / "results.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    result = plot("predictions", str(replayable.folder), "--object", "a")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert message in result.output and not replayable.replays


def test_no_plot_writes_over_the_overlays_of_an_evaluation(replayable: ReplayableResults, store: Path) -> None:
    """`plot features --out RESULTS/vis/DATASET/OVERLAY.png` replaced an `evaluate --vis-preds` overlay without a
    word, where the evaluation's results.json and ious.npz are kept; any plot command alike."""
    results = replayable.folder
    overlay = results / "vis" / "grabcut" / "a.png"
    overlay.parent.mkdir(parents=True, exist_ok=True)
    overlay.write_bytes(b"the evaluation's")
    commands = [
        ["features", "--store", str(store), "--device", "cpu", "--out", str(overlay)],
        ["iou-vs-clicks", str(results), "--out", str(overlay)],
        ["predictions", str(results), "--object", "a", "--out", str(overlay)],
    ]
    for arguments in commands:
        refused = plot(*arguments)
        assert refused.exit_code == 1, refused.output
        assert f"{overlay}: an overlay of the evaluation in {results}, which only evaluating again" in refused.output
    assert overlay.read_bytes() == b"the evaluation's"
    assert not replayable.replays, "refused before the replay"
    beside = plot("iou-vs-clicks", str(results), "--out", str(results / "curves.png"))
    assert beside.exit_code == 0 and (results / "curves.svg").is_file(), "a picture of its own beside them"


def test_overlays_of_objects_with_long_ids_are_written_under_names_that_differ(tmp_path: Path) -> None:
    first = save_overlay(tmp_path / "vis", drawn_object("x" * 300 + "1"))
    second = save_overlay(tmp_path / "vis", drawn_object("x" * 300 + "2"))
    assert first != second and first.name.endswith("_4clicks_iou0.950.png")
    assert cv2.imread(str(first)) is not None and cv2.imread(str(second)) is not None


def test_an_object_id_with_folders_in_it_names_a_file_inside_the_output_folder(tmp_path: Path) -> None:
    """Ids come from a dataset's own files (a split list, an annotation file's keys): `../` put the picture outside."""
    written = save_overlay(tmp_path / "a" / "vis", drawn_object("sub/../../../escaped"))
    assert written.parent == tmp_path / "a" / "vis" and written.name.startswith("sub_.._.._.._escaped_")
    assert has_overlay(tmp_path / "a" / "vis", "sub/../../../escaped")


def test_report_never_writes_over_the_files_of_an_evaluation_it_reads(tmp_path: Path) -> None:
    write_results(tmp_path / "lift", {"a": [0.5, 0.86, 0.91, 0.95]})
    before = {name: (tmp_path / "lift" / name).read_bytes() for name in ("results.json", "results.csv")}
    for name in before:
        refused = report(str(tmp_path / "lift"), "--format", "csv", "--out", str(tmp_path / "lift" / name))
        assert refused.exit_code == 1 and "one of the files `isegprobe evaluate` wrote into" in refused.output
    assert {name: (tmp_path / "lift" / name).read_bytes() for name in before} == before
    beside = report(str(tmp_path / "lift"), "--out", str(tmp_path / "lift" / "table.md"))
    assert beside.exit_code == 0 and (tmp_path / "lift" / "table.md").is_file(), "a file of its own beside them"
