"""What an evaluation leaves on disk: results.json, results.csv and the per-object IoU curves in ious.npz; and
results.json read back, for plots and reports.

The files are rewritten after every finished batch, so an interrupted evaluation keeps what it measured.
"""

from __future__ import annotations

import csv
import io
import json
import math
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from isegprobe.atomic_files import atomic_write_bytes
from isegprobe.errors import UserError
from isegprobe.inference.metrics import summarize
from isegprobe.output_files import EVALUATION_FILES, replaceable_file

CSV_COLUMNS = (
    "dataset",
    "num_instances",
    "NoC@80",
    "NoC@85",
    "NoC@90",
    "NoF@85",
    "NoF@90",
    "IoU@1",
    "sec_per_click",
    "sec_per_click_loop",
    "complete",
)

# What results.json files written before a run-info key existed meant by leaving it out.
RUN_INFO_DEFAULTS = {"protocol": "cache"}
# Run-info keys that results.json files written before them cannot be checked against.
RECORDED_SINCE = frozenset({"source_fingerprints", "checkpoint_step", "image_roots"})
# Run-info keys that a resumed evaluation may change: the checkpoint's path (its hash is compared), the folder of a
# store's images, which each item's image is compared with before its objects are evaluated, and where the
# featurizer's weights file was found (its sha256 is compared with the checkpoint's record).
NOT_COMPARED_ON_RESUME = frozenset({"checkpoint", "image_roots", "featurizer_weights"})

# What plots and reports read from each dataset's summary in results.json, and what each holds (as a refusal names it).
SUMMARY_KEYS = {
    "NoC@85": "numbers of clicks (finite, 1 or more)",
    "NoC@90": "numbers of clicks (finite, 1 or more)",
    "mIoU@k": "lists of one IoU or more (0 to 1)",
    "num_instances": "counts of 1 or more",
}
# What they read of the run info, which results.json files written before a key existed leave out.
OPTIONAL_RUN_KEYS = {
    "featurizer": "text or null",
    "upsampler": "text or null",
    "fusion": "text or null",
    "threshold": "numbers from 0 to 1",
    "max_clicks": "counts of 1 or more",
}


class ResultsWriter:
    """Collects IoU curves per dataset and writes the three result files atomically."""

    def __init__(self, out_dir: str | Path, max_clicks: int, run_info: dict[str, Any]) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name in EVALUATION_FILES:  # before any object is evaluated, not at the first write
            if (self.out_dir / name).is_dir():
                raise UserError(f"{self.out_dir / name}: a folder where the evaluation writes its {name}; move it away")
            replaceable_file(self.out_dir / name)
        self.max_clicks = max_clicks
        self.run_info = run_info
        self.curves: dict[str, dict[str, np.ndarray]] = {}
        self.complete: dict[str, bool] = {}
        # (predict seconds, loop seconds, clicks) per dataset: of the runs resumed from, and of this run so far
        self.timed_before: dict[str, tuple[float, float, int]] = {}
        self.timed_now: dict[str, tuple[float, float, int]] = {}
        self.written = False  # whether this evaluation's results have replaced what out_dir held
        self.unwritten = False  # whether it holds objects or a finished dataset that out_dir does not

    def resume(self) -> None:
        """Take back the curves an earlier run of this same evaluation left in `out_dir`, so that only the objects it
        did not finish are evaluated. Results of another evaluation there are refused, never mixed or replaced."""
        if not (self.out_dir / "results.json").is_file():
            return
        try:
            earlier = read_results(self.out_dir)
        except UserError as error:
            raise UserError(f"{error}; pass --overwrite to evaluate afresh into {self.out_dir}") from None
        wanted = {**self.run_info, "max_clicks": self.max_clicks}
        differences = [
            f"{key}: {earlier.get(key, RUN_INFO_DEFAULTS.get(key))!r} there, {value!r} now"
            for key, value in wanted.items()
            if key not in NOT_COMPARED_ON_RESUME
            and not (key in RECORDED_SINCE and key not in earlier)
            and earlier.get(key, RUN_INFO_DEFAULTS.get(key)) != value
        ]
        if differences:
            raise UserError(
                f"{self.out_dir} holds the results of another evaluation; choose another --out, or pass --overwrite "
                "to replace them:\n  " + "\n  ".join(differences)
            )
        try:
            with np.load(self.out_dir / "ious.npz") as arrays:
                curves = {
                    dataset: _counted_curves(arrays[f"{dataset}/ids"], arrays[f"{dataset}/ious"], summary)
                    for dataset, summary in earlier["datasets"].items()
                }
        except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as error:
            raise UserError(
                f"{self.out_dir / 'ious.npz'}: unreadable or short of the curves results.json counts ({error}); "
                "pass --overwrite to start over"
            ) from None
        problems = [problem for summary in earlier["datasets"].values() for problem in _resume_problems(summary)]
        problems += [
            problem
            for dataset, summary in earlier["datasets"].items()
            for problem in _curves_disagree(dataset, summary, *curves[dataset], self.max_clicks)
        ]
        if problems:
            raise UserError(
                f"{self.out_dir / 'results.json'}: cannot resume from it ({'; '.join(problems)}); pass --overwrite to "
                "start over"
            )
        for dataset, summary in earlier["datasets"].items():
            ids, ious = curves[dataset]
            for object_id, curve in zip(ids, ious, strict=True):
                self.add(dataset, str(object_id), curve)
            self.complete[dataset] = bool(summary["complete"])
            clicks = int(summary.get("clicks_timed", 0))
            self.timed_before[dataset] = (
                summary.get("sec_per_click", 0.0) * clicks,
                summary.get("sec_per_click_loop", 0.0) * clicks,
                clicks,
            )
        self.unwritten = False

    def add(self, dataset: str, object_id: str, ious: np.ndarray) -> None:
        self.curves.setdefault(dataset, {})[object_id] = np.asarray(ious, np.float32)
        self.complete.setdefault(dataset, False)
        self.unwritten = True

    def set_speed(self, dataset: str, predict_seconds: float, loop_seconds: float, clicks: int) -> None:
        """The time this run spent in the predictor (crops, featurizer if online, probe, un-cropping), and in the whole
        loop (reading images and the clicker too), for `clicks` clicks so far. Written out as seconds per click,
        `sec_per_click` and `sec_per_click_loop` (iSegProbe's definition), over this run and the runs it resumed, with
        the clicks timed (`clicks_timed`), so that a resumed evaluation reports the speed of all of it."""
        self.timed_now[dataset] = (predict_seconds, loop_seconds, clicks)

    def finish(self, dataset: str) -> None:
        self.complete[dataset] = True
        self.unwritten = True

    def summaries(self) -> dict[str, dict[str, Any]]:
        table = {}
        for dataset, curves in self.curves.items():
            summary = summarize(list(curves.values()), max_clicks=self.max_clicks)
            predict_before, loop_before, clicks_before = self.timed_before.get(dataset, (0.0, 0.0, 0))
            predict_now, loop_now, clicks_now = self.timed_now.get(dataset, (0.0, 0.0, 0))
            clicks = clicks_before + clicks_now
            if clicks:
                summary["sec_per_click"] = (predict_before + predict_now) / clicks
                summary["sec_per_click_loop"] = (loop_before + loop_now) / clicks
                summary["clicks_timed"] = clicks
            table[dataset] = summary | {"complete": self.complete[dataset]}
        return table

    def write(self) -> dict[str, dict[str, Any]]:
        """The curves first: a run stopped between two files leaves a results.json that claims no more than
        ious.npz holds, which is what `resume` relies on."""
        arrays = {}
        for dataset, curves in self.curves.items():
            arrays[f"{dataset}/ids"] = np.array(list(curves))
            arrays[f"{dataset}/ious"] = np.stack(list(curves.values()))
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(self.out_dir / "ious.npz", buffer.getvalue())
        summaries = self.summaries()
        document = {**self.run_info, "max_clicks": self.max_clicks, "datasets": summaries}
        atomic_write_bytes(self.out_dir / "results.json", json.dumps(document, indent=2).encode())
        self.written, self.unwritten = True, False
        atomic_write_bytes(self.out_dir / "results.csv", _csv(summaries).encode())
        return summaries


def _csv(summaries: dict[str, dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for dataset, summary in summaries.items():
        writer.writerow([dataset, *[summary.get(column) for column in CSV_COLUMNS[1:]]])
    return buffer.getvalue()


def read_results(results_dir: str | Path) -> dict[str, Any]:
    """The results.json that `isegprobe evaluate --out results_dir` wrote, checked to hold what plots and reports
    read, so that a damaged or hand-edited file is refused by name instead of failing halfway through a table."""
    path = Path(results_dir) / "results.json"
    if not path.is_file():
        raise UserError(f"{results_dir}: no results.json; pass folders written by `isegprobe evaluate --out`")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not an evaluation's results.json ({error!r})") from None
    except RecursionError:  # arrays or objects nested deeper than the parser's stack; no evaluation writes them
        raise UserError(f"{path}: not an evaluation's results.json (nested too deeply to read)") from None
    problems = _read_back_problems(document)
    if problems:
        raise UserError(f"{path}: not an evaluation's results.json ({'; '.join(problems)})")
    return document


def objects_written(results_dir: str | Path) -> int:
    """How many objects' results `results_dir` holds: 0 before an evaluation's first batch is written."""
    try:
        document = read_results(results_dir)
    except UserError:
        return 0
    return sum(summary["num_instances"] for summary in document["datasets"].values())


def _read_back_problems(document: Any) -> list[str]:
    """What keeps `document` from being read back: keys missing, or holding another kind of value than plots and
    reports expect, or out of their range ("no grabcut/NoC@85", "threshold not numbers from 0 to 1"). Every curve
    an evaluation writes has a value for its first click at least."""
    if not isinstance(document, dict) or not isinstance(document.get("datasets"), dict):
        return ["no datasets object"]
    summaries = document["datasets"]
    not_objects = [name for name, summary in summaries.items() if not isinstance(summary, dict)]
    if not_objects:
        return [f"{', '.join(not_objects)} not objects"]
    missing = [f"{name}/{key}" for name, summary in summaries.items() for key in SUMMARY_KEYS if key not in summary]
    if missing:
        return [f"no {', '.join(missing)}"]
    values = [
        (f"{name}/{key}", summary[key], kind)
        for name, summary in summaries.items()
        for key, kind in SUMMARY_KEYS.items()
    ]
    values += [(key, document[key], kind) for key, kind in OPTIONAL_RUN_KEYS.items() if key in document]
    wrong: dict[str, list[str]] = {}
    for key, value, kind in values:
        if not _KIND_TESTS[kind](value):
            wrong.setdefault(kind, []).append(key)
    return [f"{', '.join(keys)} not {kind}" for kind, keys in wrong.items()] or _contradictions(document)


def _contradictions(document: dict[str, Any]) -> list[str]:
    """Values each of the right kind that no evaluation writes together: `complete` as text ("false" read as
    finished, so its cells were not marked), a NoC above the click budget, a curve longer than it (its mIoU@5 read
    from clicks a 3-click run never made), NoC@90 below NoC@85, a dataset's own click budget other than the
    evaluation's."""
    problems = []
    for name, summary in document["datasets"].items():
        if not isinstance(summary.get("complete", True), bool):
            problems.append(f"{name}/complete is {summary['complete']!r}, not true or false")
        if summary["NoC@90"] < summary["NoC@85"]:
            problems.append(f"{name}/NoC@90 {summary['NoC@90']} below its NoC@85 {summary['NoC@85']}")
        budget = document.get("max_clicks", summary.get("max_clicks"))
        if budget is not None and not _is_count(budget):
            problems.append(f"{name}/max_clicks {budget!r} not a count of 1 or more")
            continue
        if summary.get("max_clicks", budget) != budget:
            problems.append(f"{name}/max_clicks {summary['max_clicks']!r} other than the evaluation's {budget}")
            continue
        if budget is None:
            continue
        over = [key for key in ("NoC@85", "NoC@90") if summary[key] > budget]
        if over:
            problems.append(f"{name}/{', '.join(over)} above max_clicks {budget}")
        if len(summary["mIoU@k"]) > budget:
            problems.append(f"{name}/mIoU@k has {len(summary['mIoU@k'])} clicks, more than max_clicks {budget}")
    return problems


def _resume_problems(summary: dict[str, Any]) -> list[str]:
    """What of a dataset's summary, beyond what reports read, a resumed evaluation carries on from: whether it was
    finished, and the time of the clicks timed so far, which the resumed run's speed adds to."""
    problems = []
    if not isinstance(summary.get("complete"), bool):
        problems.append(f"complete is {summary.get('complete')!r}, not true or false")
    clicks = summary.get("clicks_timed", 0)
    if not (isinstance(clicks, int) and not isinstance(clicks, bool) and clicks >= 0):
        problems.append(f"clicks_timed is {clicks!r}, not a count of 0 or more")
    for key in ("sec_per_click", "sec_per_click_loop"):
        if not _is_number(summary.get(key, 0.0), 0):
            problems.append(f"{key} is {summary[key]!r}, not a number of seconds")
    return problems


def _counted_curves(ids: np.ndarray, ious: np.ndarray, summary: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The curves of the objects results.json counts. `write` replaces ious.npz before results.json, so a run stopped
    between the two leaves the curves of its last batch after those results.json counts: they are left out, and
    their objects evaluated again, rather than the whole evaluation refused."""
    counted = summary.get("num_instances")
    if isinstance(counted, int) and not isinstance(counted, bool) and 0 <= counted < len(ids) and ious.ndim == 2:
        return ids[:counted], ious[:counted]
    return ids, ious


def _curves_disagree(
    dataset: str, summary: dict[str, Any], ids: np.ndarray, ious: np.ndarray, max_clicks: int
) -> list[str]:
    """Whether ious.npz holds the curves results.json summarizes: an ious.npz of another evaluation (copied in, or
    left by one whose results.json was replaced) was resumed from, and its curves' numbers reported as this one's."""
    if ious.ndim != 2 or ious.shape != (len(ids), max_clicks) or len(ids) != summary["num_instances"]:
        return [
            f"ious.npz holds {dataset} curves of shape {ious.shape} for {len(ids)} ids, where results.json counts "
            f"{summary['num_instances']} objects of {max_clicks} clicks"
        ]
    recomputed = summarize(list(ious), max_clicks=max_clicks)
    differ = [
        key
        for key in ("NoC@85", "NoC@90", "mIoU@k")
        if np.shape(recomputed[key]) != np.shape(summary[key])
        or not np.allclose(recomputed[key], summary[key], rtol=1e-6, atol=1e-6)
    ]
    if differ:
        return [f"ious.npz's {dataset} curves give other {', '.join(differ)} than results.json records"]
    return []


def _is_number(value: Any, low: float, high: float = math.inf) -> bool:
    """A finite number from `low` to `high`: what an evaluation writes. A hand-edited NoC of -3 was a table's best,
    in bold, and a NaN or a negative count went into tables and plots as they were."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return math.isfinite(value) and low <= value <= high


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


_KIND_TESTS: dict[str, Callable[[Any], bool]] = {
    "numbers of clicks (finite, 1 or more)": lambda value: _is_number(value, 1),
    "numbers from 0 to 1": lambda value: _is_number(value, 0, 1),
    "counts of 1 or more": _is_count,
    "lists of one IoU or more (0 to 1)": lambda value: (
        isinstance(value, list) and bool(value) and all(_is_number(item, 0, 1) for item in value)
    ),
    "text or null": lambda value: value is None or isinstance(value, str),
}


def probe_identity(metadata: dict[str, Any]) -> dict[str, str | None]:
    """featurizer, upsampler and fusion of a probe, from its checkpoint metadata: what names it in results.json,
    in the tables and plots (`probe_label`) and in the demo."""
    model = metadata["config"]["model"]
    return {
        "featurizer": (metadata.get("featurizer_provenance") or {}).get("name"),
        "upsampler": model["upsampler"]["name"],
        "fusion": model["fusion"],
    }


def refuse_to_replace_results(out: str | Path, results_dirs: Sequence[str | Path], option: str = "--out") -> None:
    """A table or picture written with `option` must not replace one of the files of an evaluation it reads
    (`report RESULTS --format csv --out RESULTS/results.csv` would have)."""
    target = Path(out).resolve()
    for folder in results_dirs:
        if target in {Path(folder).resolve() / name for name in EVALUATION_FILES}:
            raise UserError(
                f"{option} {out}: one of the files `isegprobe evaluate` wrote into {folder}, which this command reads; "
                "choose another file name"
            )
