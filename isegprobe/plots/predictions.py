"""`plot predictions`: one object of an evaluation, evaluated again and drawn after 1, 3, 5, 10 clicks and the last.

An evaluation's results.json records the checkpoint (with its sha256), the store of each dataset (or, online, its
split and folder), how it was run (click budget, flip, zoom-in, threshold) and, where `--weights` gave it, the
featurizer's weights file. The object is evaluated again exactly
that way, and its IoU curve is compared with the one in ious.npz: the picture shows the run the numbers came from,
and a checkpoint changed since, or a store extracted again since, is refused rather than drawn.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from isegprobe.cache import FeatureStore
from isegprobe.cache.schema import store_fingerprint
from isegprobe.errors import UserError
from isegprobe.hashing import file_sha256
from isegprobe.home_paths import expand_home
from isegprobe.inference.protocols import DEFAULT_PROTOCOL
from isegprobe.inference.results import read_results
from isegprobe.inference.runner import EvaluationRequest, replay_objects
from isegprobe.inference.visuals import file_name, strip_picture, write_picture
from isegprobe.output_files import output_file

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
# What a replay reads of results.json beyond what `read_results` checks for every reader.
REPLAY_KEYS = ("checkpoint", "max_clicks", "flip", "zoom_in", "threshold")


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
    featurizer_weights: str | None = None,
) -> Replayed:
    """Evaluate `object_id` of `dataset` again as the evaluation in `results_dir` did and save its strip (default
    RESULTS/predictions/<dataset>_<object>.png); `root` when the dataset moved since, `featurizer_weights` when the
    featurizer's weights file did (else the file the evaluation read: the one its `--weights` gave, or the
    checkpoint's)."""
    if out is not None:
        _check_picture_suffix(out)
    document = read_results(results_dir)
    dataset = _dataset(document, dataset)
    recorded = _recorded_curve(Path(results_dir), dataset, object_id)
    _check_replayable(document, Path(results_dir))
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
        "featurizer_weights": featurizer_weights or _still_there(document.get("featurizer_weights")),
    }
    if document.get("online"):
        source = _recorded(document, "online_sources", dataset)
        if source is None:
            raise UserError(
                f"{results_dir}: an --online evaluation from before results recorded their datasets' split and root; "
                "`isegprobe evaluate --online --vis-preds N` draws the same strips"
            )
        if not isinstance(source, dict) or not isinstance(source.get("split"), str):
            raise UserError(f"{Path(results_dir) / 'results.json'}: online_sources/{dataset} is not a split and a root")
        where = {"datasets": [dataset], "split": source["split"], "online": True, "root": root or source.get("root")}
        request = EvaluationRequest(str(checkpoint), str(results_dir), **where, **settings)
    else:
        store = _recorded(document, "sources", dataset)
        if not isinstance(store, str):
            raise UserError(
                f"{Path(results_dir) / 'results.json'}: no store recorded for {dataset} (sources/{dataset})"
            )
        _check_same_store(document, dataset, store)
        request = EvaluationRequest(str(checkpoint), str(results_dir), stores=[store], root=root, **settings)
    (result,) = replay_objects(request, dataset, [object_id])
    path = Path(out) if out else Path(results_dir) / "predictions" / file_name(f"{dataset}_{object_id}", ".png")
    write_picture(path, strip_picture(result))
    return Replayed(path, np.asarray(result.ious, np.float32), recorded)


def _still_there(recorded: Any) -> str | None:
    """The weights file an evaluation recorded reading, where it still is; else None, so that the replay looks for
    the checkpoint's own and, where that is gone too, names it and `--weights`."""
    return recorded if isinstance(recorded, str) and expand_home(recorded).is_file() else None


def _check_picture_suffix(out: str | Path) -> None:
    """Before the replay, which takes a while: a picture path cv2 cannot encode would only fail after it."""
    if output_file(out).suffix.lower() not in PICTURE_SUFFIXES:
        raise UserError(f"--out {out}: a picture path ends in {', '.join(PICTURE_SUFFIXES)}")


def _check_replayable(document: dict[str, Any], results_dir: Path) -> None:
    """Results that do not say how their evaluation ran (written before they recorded it, or edited since) are
    refused by what they lack, before any of it is read."""
    missing = [key for key in REPLAY_KEYS if key not in document]
    if missing:
        raise UserError(f"{results_dir / 'results.json'}: no {', '.join(missing)}: the evaluation cannot be replayed")
    if not isinstance(document["checkpoint"], str):
        raise UserError(f"{results_dir / 'results.json'}: checkpoint not text: the evaluation cannot be replayed")


def _check_same_store(document: dict[str, Any], dataset: str, store: str) -> None:
    """The store at the recorded path must still be the one the evaluation read, as a resumed evaluation checks:
    one extracted again there since (other items, views or featurizer) would be replayed and drawn as if it were.
    Results written before they recorded fingerprints cannot be checked."""
    recorded = _recorded(document, "source_fingerprints", dataset)
    if recorded is not None and recorded != store_fingerprint(FeatureStore.open(store).attrs):
        raise UserError(
            f"{store}: not the store this evaluation read: extracted again since, its fingerprint differs; evaluate "
            "again to draw its objects"
        )


def _recorded(document: dict[str, Any], key: str, dataset: str) -> Any:
    """What `document[key]` records for `dataset`, None where it records nothing (or is not a mapping)."""
    recorded = document.get(key)
    return recorded.get(dataset) if isinstance(recorded, dict) else None


def _dataset(document: dict[str, Any], dataset: str | None) -> str:
    names = list(document["datasets"])
    if dataset is None and len(names) == 1:
        return names[0]
    if dataset is None:
        raise UserError(f"--dataset: the evaluation has {', '.join(names)}; say which")
    if dataset not in names:
        raise UserError(f"--dataset {dataset}: the evaluation has {', '.join(names)}, not it")
    return dataset


def _recorded_curve(results_dir: Path, dataset: str, object_id: str) -> np.ndarray:
    try:
        with np.load(results_dir / "ious.npz") as arrays:
            ids, ious = [str(name) for name in arrays[f"{dataset}/ids"]], arrays[f"{dataset}/ious"]
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile):  # EOFError: an empty file
        raise UserError(f"{results_dir / 'ious.npz'}: missing or unreadable") from None
    if object_id not in ids:
        example = f" (e.g. {ids[0]})" if ids else ""
        raise UserError(f"--object {object_id!r}: not among the {len(ids)} objects of {dataset}{example}")
    return ious[ids.index(object_id)]
