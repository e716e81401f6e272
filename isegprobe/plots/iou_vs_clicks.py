"""mIoU against the number of clicks, one curve per evaluation and one panel per dataset.

The curves are read from each evaluation's results.json (`mIoU@k`, computed once by `summarize`, as RITM does), so a
picture always shows the numbers the tables show. NoC@85 and NoC@90 are in each curve's legend label and the two IoU
targets are drawn as dotted lines: where a curve crosses them is not the NoC (a mean over objects of each object's own
first click above the target), and the label keeps the two from being confused. A curve of an evaluation that did
not do every object of a dataset is marked in its label as `report` marks its cells (`*` stopped, `†` still running),
with the number of objects it covers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib import rcParams
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import text_to_path
from matplotlib.ticker import MaxNLocator

from isegprobe.errors import UserError
from isegprobe.inference.report import INCOMPLETE_MARK, RUNNING_MARK
from isegprobe.inference.result_labels import probe_label
from isegprobe.inference.results import read_results
from isegprobe.locks import lock_holder
from isegprobe.plots.figures import new_figure, save_figure
from isegprobe.units import counted

CURVE_FORMATS = ("png", "svg")

MARKERS = ("o", "s", "^", "D", "v", "P", "*", "X")
TARGETS = (0.85, 0.90)
PANEL_SIZE = (5.5, 4.2)  # inches: the axes with their labels and title; each panel's legend below adds its height
LEGEND_FONT = FontProperties(size=8)
# Legend text wider than this share of a panel wraps: the rest is the line sample and the margins.
LEGEND_TEXT_SHARE = 0.85
ENTRY_SPACING = 0.5  # matplotlib's default gap between legend entries, in font sizes


@dataclass
class EvaluationCurves:
    """One evaluation's curves: its legend label and, per dataset, mIoU@k, the NoC at 85 and 90 % IoU, how many
    objects they average over and whether those were all of the dataset's (an evaluation stopped early, by
    --max-objects or killed, covers only the first ones)."""

    label: str
    miou: dict[str, list[float]]
    noc: dict[str, tuple[float, float]]
    num_instances: dict[str, int]
    complete: dict[str, bool]
    running: bool = False  # its `isegprobe evaluate` still runs: unfinished datasets are in progress, not stopped


def read_evaluation(results_dir: str | Path, label: str | None = None) -> EvaluationCurves:
    """The curves of the evaluation written to `results_dir`; its label defaults to the probe's description."""
    document = read_results(results_dir)
    return evaluation_curves(document, label or probe_label(document, results_dir), lock_holder(Path(results_dir)))


def evaluation_curves(document: dict[str, Any], label: str, running: str | None = None) -> EvaluationCurves:
    """The curves of an evaluation's results.json `document`; `running`: what the `isegprobe evaluate` still
    writing it says of itself (`isegprobe.locks.lock_holder`), None when none is."""
    datasets = document["datasets"]
    miou = {name: list(summary["mIoU@k"]) for name, summary in datasets.items()}
    noc = {name: (summary["NoC@85"], summary["NoC@90"]) for name, summary in datasets.items()}
    num_instances = {name: summary["num_instances"] for name, summary in datasets.items()}
    complete = {name: bool(summary.get("complete", True)) for name, summary in datasets.items()}
    return EvaluationCurves(label, miou, noc, num_instances, complete, running is not None)


def plot_iou_vs_clicks(evaluations: Sequence[EvaluationCurves], out: str | Path, title: str = "") -> list[Path]:
    """Write `out` as PNG and SVG (text kept as text, so labels stay editable); returns both paths."""
    return save_figure(iou_vs_clicks_figure(evaluations, title), out, formats=CURVE_FORMATS)


def iou_vs_clicks_figure(evaluations: Sequence[EvaluationCurves], title: str = "") -> Figure:
    """One panel per dataset, its legend below it. Labels wrap to the panel's width and the figure grows by the
    legend's height, so that long probe names neither cover the curves nor squeeze the axes away, and every NoC
    stays in view. Labels, titles and dataset names are drawn as written: a `$` in them is not matplotlib's math."""
    datasets = list(dict.fromkeys(name for evaluation in evaluations for name in evaluation.miou))
    if not datasets:
        raise UserError("the evaluations hold no dataset results to plot")
    most = most_curves()
    if len(evaluations) > most:
        raise UserError(
            f"{len(evaluations)} evaluations in one figure: past {most}, two curves share a colour and a marker and "
            f"cannot be told apart (and the legend pushes the axes out of the picture); plot them in groups of at most "
            f"{most}, or tabulate them all with `isegprobe report`"
        )
    width, height = PANEL_SIZE
    text_width = LEGEND_TEXT_SHARE * width * 72
    labels = {
        dataset: {
            index: wrap_label(evaluation.label, _endings(evaluation, dataset), text_width)
            for index, evaluation in enumerate(evaluations)
            if evaluation.miou.get(dataset)
        }
        for dataset in datasets
    }
    legend_height = max(_legend_height(list(wrapped.values())) for wrapped in labels.values())
    figure, axes = new_figure(len(datasets), panel_size=(width, height + legend_height))
    for axis, dataset in zip(axes, datasets, strict=True):
        for index, label in labels[dataset].items():
            curve = evaluations[index].miou[dataset]
            axis.plot(
                range(1, len(curve) + 1),
                [100 * value for value in curve],
                marker=MARKERS[index % len(MARKERS)],
                color=_colour(index),
                markersize=4,
                linewidth=1.8,
                label=label,
            )
        for target in TARGETS:
            axis.axhline(100 * target, color="grey", linestyle=":", linewidth=1)
        axis.set_title(dataset, parse_math=False)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("number of clicks")
        axis.set_ylabel("mIoU (%)")
        axis.grid(True, linestyle="--", alpha=0.5)
        legend = axis.legend(prop=LEGEND_FONT, loc="upper center", bbox_to_anchor=(0.5, -0.15), frameon=False)
        for text in legend.get_texts():
            text.set_parse_math(False)
    if title:
        figure.suptitle(title, parse_math=False)
    _room_for_legends(figure)
    return figure


def _room_for_legends(figure: Figure, margin: float = 0.05) -> None:
    """Lengthen the figure until each panel's legend ends `margin` inches above its bottom. The legends' height
    sets the figure's at first, but a legend hangs from its axes, whose height the layout then chooses: forty
    labels of three or four lines ran off the picture's bottom."""
    for _ in range(3):
        figure.draw_without_rendering()
        bottom = min(axis.get_legend().get_window_extent().y0 for axis in figure.axes) / figure.dpi
        if bottom >= margin:
            return
        figure.set_figheight(figure.get_figheight() + margin - bottom)


def most_curves() -> int:
    """How many curves one figure tells apart: the first pair of evaluations with the same colour and marker is
    this many apart (40 with matplotlib's ten colours and MARKERS' eight)."""
    return math.lcm(len(rcParams["axes.prop_cycle"].by_key()["color"]), len(MARKERS))


def _colour(index: int) -> str:
    """Evaluation `index`'s colour in every panel: the axes' own cycle would give the first evaluation that has a
    dataset the first colour, whichever evaluation it is."""
    cycle = rcParams["axes.prop_cycle"].by_key()["color"]
    return cycle[index % len(cycle)]


def wrap_label(label: str, endings: Sequence[str], max_points: float) -> str:
    """`label` and then `endings` (each kept whole: the NoC values, the note of an evaluation stopped early),
    broken at spaces into lines at most `max_points` wide in the legend's font; a word wider than a line is split
    where it must be."""
    words = [piece for word in label.split(" ") for piece in _pieces(word, max_points)] + list(endings)
    lines: list[str] = []
    for word in words:
        if lines and _points(f"{lines[-1]} {word}") <= max_points:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return "\n".join(lines)


def _endings(evaluation: EvaluationCurves, dataset: str) -> list[str]:
    """The curve's NoC and, where the evaluation did not do every object, `report`'s mark and how many objects
    its numbers cover: those numbers are not the evaluation's final ones."""
    noc = evaluation.noc[dataset]
    endings = [f"(NoC@85 {noc[0]:.2f}, NoC@90 {noc[1]:.2f})"]
    if evaluation.complete[dataset]:
        return endings
    count = evaluation.num_instances[dataset]
    done = counted(count, "object")
    if evaluation.running:
        return [*endings, f"{RUNNING_MARK} in progress, {done} so far"]
    return [*endings, f"{INCOMPLETE_MARK} stopped after {done}"]


def _pieces(word: str, max_points: float) -> list[str]:
    pieces = [""]
    for character in word:
        if pieces[-1] and _points(pieces[-1] + character) > max_points:
            pieces.append("")
        pieces[-1] += character
    return pieces


def _points(text: str) -> float:
    """Width of `text` drawn literally, as the legend draws it: a `$` is a dollar, never the start of math."""
    return text_to_path.get_text_width_height_descent(text, LEGEND_FONT, ismath=False)[0]


def _legend_height(labels: Sequence[str]) -> float:
    """Inches the legend of these (wrapped) labels takes below its panel."""
    first_line, further_line = _line_heights()
    lines = sum(label.count("\n") for label in labels)
    gaps = ENTRY_SPACING * LEGEND_FONT.get_size_in_points() * len(labels)
    return (first_line * len(labels) + further_line * lines + gaps) / 72


@functools.cache
def _line_heights() -> tuple[float, float]:
    """Points a legend label's first line takes and each further line adds, as matplotlib lays them out (a further
    line is 1.2 line heights, more than its font size: counted as the font size, forty labels of two lines ran
    off the picture's bottom)."""
    figure = Figure(dpi=72)
    renderer = FigureCanvasAgg(figure).get_renderer()
    one, two = (
        figure.text(0, 0, text, fontproperties=LEGEND_FONT).get_window_extent(renderer).height
        for text in ("Ag", "Ag\nAg")
    )
    return one, two - one
