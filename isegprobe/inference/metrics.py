"""NoC, NoF and mIoU@k computed as RITM computes them, so the numbers sit in the same tables as the papers'."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from isegprobe.tables import markdown_table

# (results key, column title, format)
_TABLE_COLUMNS = (
    ("NoC@85", "NoC@85", "{:.2f}"),
    ("NoC@90", "NoC@90", "{:.2f}"),
    ("NoF@85", "NoF@85", "{:d}"),
    ("NoF@90", "NoF@90", "{:d}"),
    ("IoU@1", "IoU@1", "{:.2%}"),
)
# Seconds per click: in the predictor alone, and over the whole loop, reading images included (iSegProbe's SPC).
_SPEED_COLUMNS = (("sec_per_click", "SPC, s", "{:.3f}"), ("sec_per_click_loop", "SPC loop, s", "{:.3f}"))


def iou(gt: np.ndarray, pred: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """Intersection over union of two boolean masks, counting no pixel of the ignore region.

    An empty union (no object, nothing predicted) is a perfect answer: 1.0. RITM divides 0 by 0 there and gets
    NaN, which never reaches a threshold; benchmark instances are never empty, so the two agree on them.
    """
    valid = np.ones_like(gt, dtype=bool) if ignore is None else ~ignore
    union = np.count_nonzero((gt | pred) & valid)
    if union == 0:
        return 1.0
    return np.count_nonzero(gt & pred & valid) / union


def number_of_clicks(ious: Sequence[float], threshold: float, max_clicks: int) -> int:
    """Clicks (1-based) until the IoU first reaches `threshold`; `max_clicks` if it never does within the budget.

    Both sides are compared as float32, as in RITM, whose curves are float32 arrays and whose float thresholds
    (np.arange(0.8, 0.951, 0.05), so 0.9000000000000001) are cast down to them: an IoU of exactly 0.9 reaches 90 %
    there, and so it does here. Clicks past `max_clicks` are not looked at.
    """
    reached = np.asarray(ious, dtype=np.float32)[:max_clicks] >= np.float32(threshold)
    return int(np.argmax(reached)) + 1 if reached.any() else max_clicks


def summarize(
    all_ious: list[np.ndarray],
    thresholds: Sequence[float] = (0.80, 0.85, 0.90),
    max_clicks: int = 20,
    elapsed_s: float | None = None,
) -> dict:
    """The numbers papers report for one dataset, from one IoU-per-click curve per instance, as plain JSON types.

    - `NoC@t`: mean number of clicks to reach IoU t (`number_of_clicks`).
    - `NoF@t`: RITM's ">=20@t" column, the instances whose NoC equals `max_clicks`. So an instance that reaches t
      exactly at the last click counts as a failure too.
    - `IoU@1`: mean IoU after the first click.
    - `mIoU@k`: mean IoU after k = 1, 2, ... clicks, up to the shortest curve, as RITM does. Curves are short when the
      evaluation stopped once an instance reached its target IoU (RITM's default stops at 0.90); NoC and NoF are
      unaffected by that, but a full mIoU@k curve needs every instance evaluated for all `max_clicks` clicks.
    - `sec_per_click`: `elapsed_s` divided by the number of clicks made, when `elapsed_s` is given.

    Keys name thresholds in percent (0.85 -> "NoC@85").
    """
    if not all_ious:
        raise ValueError("no IoU curves to summarize")
    curves = [np.asarray(curve, dtype=np.float64) for curve in all_ious]
    if min(len(curve) for curve in curves) == 0:
        raise ValueError("every instance needs at least one click's IoU")

    results: dict = {"num_instances": len(curves), "max_clicks": max_clicks}
    for threshold in thresholds:
        nocs = np.array([number_of_clicks(curve, threshold, max_clicks) for curve in curves])
        percent = f"{threshold * 100:g}"
        results[f"NoC@{percent}"] = float(nocs.mean())
        results[f"NoF@{percent}"] = int(np.count_nonzero(nocs == max_clicks))

    # Means in float32, summed as the research code's numpy calls sum them: IoU@1 over the first clicks as one
    # vector (pairwise), mIoU@k down the stacked curves (row after row); float64 means differ by about 1e-7.
    shortest = min(len(curve[:max_clicks]) for curve in curves)
    firsts = np.array([curve[0] for curve in curves], dtype=np.float32)
    miou = np.array([curve[:shortest] for curve in curves], dtype=np.float32).mean(axis=0)
    results["IoU@1"] = float(firsts.mean(0))
    results["mIoU@k"] = [float(value) for value in miou]
    if elapsed_s is not None:
        results["sec_per_click"] = float(elapsed_s) / sum(len(curve) for curve in curves)
    return results


def format_table(results_by_dataset: dict[str, dict]) -> str:
    """A Markdown table with one row per dataset and the columns of the papers' tables ("-" where a value is missing).

    A seconds-per-click column appears only when some dataset has it.
    """
    columns = list(_TABLE_COLUMNS)
    for speed in _SPEED_COLUMNS:
        if any(speed[0] in results for results in results_by_dataset.values()):
            columns.append(speed)
    rows = [["Dataset", *(title for _, title, _ in columns)]]
    for dataset, results in results_by_dataset.items():
        cells = [fmt.format(results[key]) if key in results else "-" for key, _, fmt in columns]
        rows.append([dataset, *cells])
    return markdown_table(rows)


def format_miou_curves(results_by_dataset: dict[str, dict], clicks: tuple[int, ...] = (1, 3, 5, 10, 20)) -> str:
    """One line per dataset with the mean IoU after the given numbers of clicks that the run reached, and after its
    last click: the per-click view that the NoC table folds away."""
    lines = []
    for dataset, results in results_by_dataset.items():
        curve = results["mIoU@k"]
        shown = sorted({k for k in clicks if k <= len(curve)} | {len(curve)})
        points = ", ".join(f"{k}: {curve[k - 1]:.3f}" for k in shown)
        lines.append(f"mIoU after k clicks ({dataset}): {points}")
    return "\n".join(lines)


def curve_warnings(results_by_dataset: dict[str, dict]) -> list[str]:
    """What the mIoU curves say of the probe where its numbers would read as an ordinary weak probe's: one that
    predicts nothing of any object at any click (untrained, diverged, or a threshold it never crosses), or one whose
    mean IoU falls as the clicks are added (it does not follow them)."""
    warnings = []
    for dataset, results in results_by_dataset.items():
        curve = results["mIoU@k"]
        if not curve:
            continue
        if max(curve) == 0:
            warnings.append(
                f"warning ({dataset}): the IoU is 0 at every click on every object: the probe segments nothing of "
                "them (untrained, diverged, or trained on other features?)"
            )
        elif len(curve) > 1 and curve[-1] < curve[0]:
            # As many decimals as it takes for the two numbers to read apart.
            digits = next((places for places in range(3, 10) if round(curve[0], places) != round(curve[-1], places)), 9)
            warnings.append(
                f"warning ({dataset}): the mean IoU falls as clicks are added ({curve[0]:.{digits}f} after 1, "
                f"{curve[-1]:.{digits}f} after {len(curve)}): the probe does not follow the clicks"
            )
    return warnings
