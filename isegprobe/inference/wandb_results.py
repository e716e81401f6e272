"""Evaluation results in Weights & Biases: one run per `evaluate`, comparable across probes in the W&B UI."""

from __future__ import annotations

from typing import Any


def log_results(run: Any, summaries: dict[str, dict[str, Any]]) -> None:
    """Each dataset's mIoU after k clicks as a curve over k (W&B's step), and its NoC, NoF and IoU@1 in the run
    summary, so the runs table lists them side by side; then closes the run."""
    longest = max((len(results["mIoU@k"]) for results in summaries.values()), default=0)
    for click in range(1, longest + 1):
        point = {
            f"{name}/mIoU": results["mIoU@k"][click - 1]
            for name, results in summaries.items()
            if click <= len(results["mIoU@k"])
        }
        run.log(point, step=click)
    run.summary.update(
        {
            f"{name}/{key}": value
            for name, results in summaries.items()
            for key, value in results.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }
    )
    run.finish()
