"""`plot predictions`: one object of an evaluation, evaluated again and drawn after 1, 3, 5, 10 clicks and the last.

An evaluation's results.json records the checkpoint (with its sha256), the store of each dataset (or, online, its
split and folder) and how it was run (click budget, flip, zoom-in, threshold). The object is evaluated again exactly
that way, and its IoU curve is compared with the one in ious.npz: the picture shows the run the numbers came from,
and a checkpoint changed since is refused rather than drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from isegprobe.errors import UserError
from isegprobe.hashing import file_sha256
from isegprobe.inference.protocols import DEFAULT_PROTOCOL
from isegprobe.inference.results import read_results
from isegprobe.inference.runner import EvaluationRequest, replay_objects
from isegprobe.inference.visuals import strip_picture


@dataclass
class Replayed:
    path: Path  # the picture
    ious: np.ndarray  # the curve measured again
    recorded: np.ndarray  # the curve in ious.npz

    @property
    def largest_difference(self) -> float:
        return float(np.abs(self.ious - self.recorded).max())


def plot_predictions(
    results_dir: str | Path,
    object_id: str,
    dataset: str | None = None,
    out: str | Path | None = None,
    root: str | None = None,
    device: str = "cpu",
) -> Replayed:
    """Evaluate `object_id` of `dataset` again as the evaluation in `results_dir` did and save its strip (default
    RESULTS/predictions/<dataset>_<object>.png); `root` when the dataset moved since."""
    document = read_results(results_dir)
    dataset = _dataset(document, dataset)
    recorded = _recorded_curve(Path(results_dir), dataset, object_id)
    checkpoint = Path(document["checkpoint"])
    if not checkpoint.is_file():
        raise UserError(f"{results_dir}: its checkpoint {checkpoint} is gone")
    if file_sha256(checkpoint) != document.get("checkpoint_sha256"):
        raise UserError(f"{checkpoint}: changed since the evaluation in {results_dir} (its sha256 differs)")
    settings = {
        "max_clicks": int(document["max_clicks"]),
        "flip": bool(document["flip"]),
        "zoom_in": bool(document["zoom_in"]),
        "threshold": float(document["threshold"]),
        "device": device,
        "protocol": document.get("protocol", DEFAULT_PROTOCOL),
    }
    if document.get("online"):
        source = document.get("online_sources", {}).get(dataset)
        if source is None:
            raise UserError(
                f"{results_dir}: an --online evaluation from before results recorded their datasets' split and root; "
                "`isegprobe evaluate --online --vis-preds N` draws the same strips"
            )
        where = {"datasets": [dataset], "split": source["split"], "online": True, "root": root or source["root"]}
        request = EvaluationRequest(str(checkpoint), str(results_dir), **where, **settings)
    else:
        request = EvaluationRequest(
            str(checkpoint), str(results_dir), stores=[document["sources"][dataset]], root=root, **settings
        )
    (result,) = replay_objects(request, dataset, [object_id])
    path = Path(out) if out else Path(results_dir) / "predictions" / f"{dataset}_{object_id}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), strip_picture(result))
    return Replayed(path, np.asarray(result.ious, np.float32), recorded)


def _dataset(document: dict[str, Any], dataset: str | None) -> str:
    names = list(document["datasets"])
    if dataset is None and len(names) == 1:
        return names[0]
    if dataset not in names:
        raise UserError(f"--dataset: the evaluation has {', '.join(names)}; say which (got {dataset!r})")
    return dataset


def _recorded_curve(results_dir: Path, dataset: str, object_id: str) -> np.ndarray:
    with np.load(results_dir / "ious.npz") as arrays:
        ids, ious = [str(name) for name in arrays[f"{dataset}/ids"]], arrays[f"{dataset}/ious"]
    if object_id not in ids:
        raise UserError(f"--object {object_id!r}: not among the {len(ids)} objects of {dataset} (e.g. {ids[0]})")
    return ious[ids.index(object_id)]
