"""mIoU against the number of clicks, one curve per evaluation and one panel per dataset.

The curves are read from each evaluation's results.json (`mIoU@k`, computed once by `summarize`, as RITM does), so a
picture always shows the numbers the tables show. NoC@85 and NoC@90 are in each curve's legend label and the two IoU
targets are drawn as dotted lines: where a curve crosses them is not the NoC (a mean over objects of each object's own
first click above the target), and the label keeps the two from being confused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.ticker import MaxNLocator

from isegprobe.errors import UserError
from isegprobe.inference.results import probe_label, read_results
from isegprobe.plots.figures import new_figure, save_figure

MARKERS = ("o", "s", "^", "D", "v", "P", "*", "X")
TARGETS = (0.85, 0.90)


@dataclass
class EvaluationCurves:
    """One evaluation's curves: its legend label and, per dataset, mIoU@k and the NoC at 85 and 90 % IoU."""

    label: str
    miou: dict[str, list[float]]
    noc: dict[str, tuple[float, float]]


def read_evaluation(results_dir: str | Path, label: str | None = None) -> EvaluationCurves:
    """The curves of the evaluation written to `results_dir`; its label defaults to the probe's description."""
    document = read_results(results_dir)
    return evaluation_curves(document, label or probe_label(document, results_dir))


def evaluation_curves(document: dict[str, Any], label: str) -> EvaluationCurves:
    """The curves of an evaluation's results.json `document`."""
    datasets = document["datasets"]
    miou = {name: list(summary["mIoU@k"]) for name, summary in datasets.items()}
    noc = {name: (summary["NoC@85"], summary["NoC@90"]) for name, summary in datasets.items()}
    return EvaluationCurves(label, miou, noc)


def plot_iou_vs_clicks(evaluations: Sequence[EvaluationCurves], out: str | Path, title: str = "") -> list[Path]:
    """Write `out` as PNG and SVG (text kept as text, so labels stay editable); returns both paths."""
    datasets = list(dict.fromkeys(name for evaluation in evaluations for name in evaluation.miou))
    if not datasets:
        raise UserError("the evaluations hold no dataset results to plot")
    figure, axes = new_figure(len(datasets), panel_size=(5.5, 4.2))
    for axis, dataset in zip(axes, datasets, strict=True):
        for index, evaluation in enumerate(evaluations):
            curve = evaluation.miou.get(dataset)
            if not curve:
                continue
            noc85, noc90 = evaluation.noc[dataset]
            clicks = range(1, len(curve) + 1)
            axis.plot(
                clicks,
                [100 * value for value in curve],
                marker=MARKERS[index % len(MARKERS)],
                markersize=4,
                linewidth=1.8,
                label=f"{evaluation.label} (NoC@85 {noc85:.2f}, NoC@90 {noc90:.2f})",
            )
        for target in TARGETS:
            axis.axhline(100 * target, color="grey", linestyle=":", linewidth=1)
        axis.set_title(dataset)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("number of clicks")
        axis.set_ylabel("mIoU (%)")
        axis.grid(True, linestyle="--", alpha=0.5)
        # Below the panel: long probe names would otherwise cover the curves.
        axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), frameon=False)
    if title:
        figure.suptitle(title)
    return save_figure(figure, Path(out), formats=("png", "svg"))
