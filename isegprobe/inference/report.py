"""The papers' comparison table from several evaluations: one row per probe, with the protocol that evaluated it;
NoC@85, NoC@90 and mIoU after k clicks per dataset; the best value of each column in bold (fewest clicks, highest
mIoU).

A cell is only as good as the evaluation behind it, so the table says when one is still running or was stopped before
every object was done (and such a cell is never a column's best), when rows came from different protocols, settings
(flip, zoom-in, online, threshold) or click budgets, or when two rows measured a dataset on different numbers of
objects (another split, say).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from isegprobe.inference.result_labels import protocol_words
from isegprobe.inference.results import RUN_INFO_DEFAULTS
from isegprobe.tables import markdown_table

INCOMPLETE_MARK = "*"
RUNNING_MARK = "†"

Evaluation = tuple[str, dict[str, Any]]  # (row label, results.json document)


@dataclass
class Column:
    """One number of one dataset: NoC@85, NoC@90 (fewer is better) or the mIoU in % after `clicks` (more is)."""

    dataset: str
    metric: str
    clicks: int = 0

    @property
    def title(self) -> str:
        return f"{self.dataset} {self.metric}" if self.metric != "mIoU" else f"{self.dataset} mIoU@{self.clicks} (%)"

    @property
    def lower_is_better(self) -> bool:
        return self.metric != "mIoU"

    def value(self, document: dict[str, Any]) -> float | None:
        summary = document["datasets"].get(self.dataset)
        if summary is None:
            return None
        if self.metric != "mIoU":
            return float(summary[self.metric])
        curve = summary["mIoU@k"]
        return 100 * curve[self.clicks - 1] if len(curve) >= self.clicks else None


def format_report(
    evaluations: Sequence[Evaluation],
    miou_at: int = 5,
    table_format: str = "md",
    running: Mapping[int, str] | None = None,
) -> str:
    """The table as Markdown (best values in bold, notes below) or CSV (plain numbers, for spreadsheets, with a
    column per dataset that says whether its evaluation is complete; `report_notes` are for beside it).
    `running`: the positions in `evaluations` of those still being written, with what their command says of itself
    (see `isegprobe.locks.lock_holder`); their unfinished cells are marked as in progress, not as stopped. Rows are
    told apart by position, never by label, so that two rows labelled alike keep their notes."""
    running = running or {}
    datasets = _datasets(evaluations)
    columns = [Column(dataset, metric, miou_at) for dataset in datasets for metric in ("NoC@85", "NoC@90", "mIoU")]
    header = ["probe", "protocol", *(column.title for column in columns)]
    values = [[column.value(document) for column in columns] for _, document in evaluations]
    labels = [label for label, _ in evaluations]
    if table_format == "csv":
        header += [f"{dataset} complete" for dataset in datasets]
        rows = [
            [*row, *(_completeness(document, dataset, index in running) for dataset in datasets)]
            for index, ((_, document), row) in enumerate(zip(evaluations, values, strict=True))
        ]
        return _csv(header, labels, [protocol_of(document) for _, document in evaluations], rows)
    # The cells of an evaluation that did not do every object are not final: never a column's best.
    final = [
        [None if _incomplete(document, column.dataset) else value for column, value in zip(columns, row, strict=True)]
        for (_, document), row in zip(evaluations, values, strict=True)
    ]
    documents = [document for _, document in evaluations]
    best = [
        _best([row[index] for row in final], column.lower_is_better) if _comparable(column, documents) else None
        for index, column in enumerate(columns)
    ]
    rows = [header]
    for index, ((label, document), row) in enumerate(zip(evaluations, values, strict=True)):
        cells = []
        for column, value, column_best in zip(columns, row, best, strict=True):
            mark = _mark(document, column.dataset, index in running)
            cells.append(_cell(value, None if mark else column_best, mark))
        rows.append([label, protocol_of(document), *cells])
    # A blank line ends the table: in GitHub's Markdown a text line right after it would become a row.
    return markdown_table(rows) + "".join(f"\n\n{note}" for note in report_notes(evaluations, miou_at, running))


def report_notes(
    evaluations: Sequence[Evaluation], miou_at: int = 5, running: Mapping[int, str] | None = None
) -> list[str]:
    """What the table's numbers need said beside them: evaluations stopped or running, rows that measured other
    objects or protocols, curves too short for the mIoU column."""
    datasets = _datasets(evaluations)
    return _notes(evaluations, datasets, running or {}) + _short_curve_notes(evaluations, miou_at)


def _datasets(evaluations: Sequence[Evaluation]) -> list[str]:
    return list(dict.fromkeys(name for _, document in evaluations for name in document["datasets"]))


def _completeness(document: dict[str, Any], dataset: str, running: bool) -> str:
    """A CSV cell: whether the row's evaluation of `dataset` did every object (`yes`), stopped before (`no`), or is
    still at it (`running`); empty where it has no such dataset."""
    if dataset not in document["datasets"]:
        return ""
    if not _incomplete(document, dataset):
        return "yes"
    return "running" if running else "no"


def protocol_of(document: dict[str, Any]) -> str:
    """The evaluation protocol of a results.json (see isegprobe.inference.protocols)."""
    return str(document.get("protocol", RUN_INFO_DEFAULTS["protocol"]))


def _incomplete(document: dict[str, Any], dataset: str) -> bool:
    return not document["datasets"].get(dataset, {}).get("complete", True)


def _mark(document: dict[str, Any], dataset: str, running: bool) -> str:
    if not _incomplete(document, dataset):
        return ""
    return RUNNING_MARK if running else INCOMPLETE_MARK


def _comparable(column: Column, documents: Sequence[dict[str, Any]]) -> bool:
    """Whether the finished rows' cells of `column` measure one thing, so that one can be its best: the same protocol,
    the same objects (their count, and the folder their images came from, where recorded) and, for a NoC, the same
    click budget (an object short of the target counts as the budget, so a 5-click evaluation's NoC is at most 5).
    The notes below the table say which of these differ."""
    dataset = column.dataset
    present = [
        document for document in documents if dataset in document["datasets"] and not _incomplete(document, dataset)
    ]
    roots = [document.get("image_roots") for document in present]
    measured = [
        [protocol_of(document) for document in present],
        [document["datasets"][dataset]["num_instances"] for document in present],
        [str(recorded[dataset]) for recorded in roots if isinstance(recorded, dict) and dataset in recorded],
    ]
    if column.lower_is_better:
        measured.append([document.get("max_clicks") for document in present])
    return all(len(set(values)) < 2 for values in measured)


def _best(values: list[float | None], lower_is_better: bool) -> float | None:
    """The column's best value; a NaN (a damaged or hand-edited results.json) is never it, and a column whose rows
    all read the same has none (every probe at the click budget is no probe's success)."""
    present = [value for value in values if value is not None and not math.isnan(value)]
    if len({f"{value:.2f}" for value in present}) < 2:
        return None
    return min(present) if lower_is_better else max(present)


def _cell(value: float | None, best: float | None, mark: str) -> str:
    if value is None:
        return "-"
    text = f"{value:.2f}"
    if best is not None and text == f"{best:.2f}":
        text = f"**{text}**"
    return text + mark


def _notes(evaluations: Sequence[Evaluation], datasets: Sequence[str], running: Mapping[int, str]) -> list[str]:
    notes = []
    stopped = [
        index
        for index, (_, document) in enumerate(evaluations)
        if index not in running and any(_incomplete(document, dataset) for dataset in datasets)
    ]
    if stopped:
        notes.append(f"{INCOMPLETE_MARK} evaluation stopped before every object was done")
    notes += [
        f"{label}: no object evaluated yet (its evaluation stopped before its first batch was written; the same "
        "`isegprobe evaluate` command starts it again)"
        for index, (label, document) in enumerate(evaluations)
        if index not in running and not document["datasets"]
    ]
    for index, holder in running.items():
        label = evaluations[index][0]
        notes.append(
            f"{RUNNING_MARK} {label}: evaluation in progress, its numbers cover the objects done so far ({holder})"
        )
    protocols = [(label, protocol_of(document)) for label, document in evaluations]
    if _differ(protocols):
        notes.append(
            f"rows come from different evaluation protocols ({_listed(protocols)}), so their numbers do not compare"
        )
    # The protocol, the first of the words, has its note above.
    settings = _differing_settings([protocol_words(document)[1:] for _, document in evaluations])
    if any(settings):
        listed = "; ".join(
            f"{label}: {', '.join(words)}" for (label, _), words in zip(evaluations, settings, strict=True)
        )
        notes.append(
            f"rows were evaluated with different settings ({listed}), so their differences are not the probes'"
        )
    budgets = [(label, document.get("max_clicks")) for label, document in evaluations]
    if _differ(budgets):
        notes.append(
            f"rows had different click budgets ({_listed(budgets)}): an object that never reaches the target counts "
            "as the budget, so their NoC do not compare"
        )
    counted = [
        (label, {name: summary["num_instances"] for name, summary in document["datasets"].items()})
        for label, document in evaluations
    ]
    return notes + _image_root_notes(evaluations) + object_count_notes(counted, "rows")


def _image_root_notes(evaluations: Sequence[Evaluation]) -> list[str]:
    """Per dataset whose rows read its images from different folders, a note naming them: two custom folders (or
    an SBD and its edited copy) share a dataset's name and so a column, and their numbers do not compare."""
    roots: dict[str, list[tuple[str, str]]] = {}
    for label, document in evaluations:
        recorded = document.get("image_roots")  # absent from results written before it was recorded
        for dataset, root in recorded.items() if isinstance(recorded, dict) else ():
            roots.setdefault(dataset, []).append((label, str(root)))
    return [
        f"{dataset}: rows read its images from different folders ({_listed(read)}); unless these hold the same "
        "images, their numbers do not compare"
        for dataset, read in roots.items()
        if _differ(read)
    ]


def _short_curve_notes(evaluations: Sequence[Evaluation], miou_at: int) -> list[str]:
    """A note where an mIoU cell is `-` because its curve stops before `miou_at` clicks: a column of `-` for
    `--miou-at 1000` said nothing of why."""
    short = [
        f"{label} {dataset}: {len(summary['mIoU@k'])}"
        for label, document in evaluations
        for dataset, summary in document["datasets"].items()
        if len(summary["mIoU@k"]) < miou_at
    ]
    if not short:
        return []
    return [f"- in mIoU@{miou_at}: the curve stops before {miou_at} clicks ({', '.join(short)} clicks)"]


def object_count_notes(counted: Sequence[tuple[str, Mapping[str, int]]], what: str) -> list[str]:
    """Per dataset that `counted` (each a label and its objects per dataset) measured on different numbers of
    objects, a note naming each one's count: such `what` (rows, curves) do not compare, however close they lie."""
    datasets = dict.fromkeys(name for _, counts in counted for name in counts)
    notes = []
    for dataset in datasets:
        counts = [(label, by_dataset[dataset]) for label, by_dataset in counted if dataset in by_dataset]
        if _differ(counts):
            notes.append(
                f"{dataset}: {what} measured different numbers of objects ({_listed(counts)}), so they do not compare"
            )
    return notes


def _differing_settings(words: Sequence[Sequence[str]]) -> list[list[str]]:
    """Per row, those of its settings' words (`default_labels`' words: "flip" / "no flip", "threshold 0.5", ...)
    that not every row shares."""
    differing = [position for position, column in enumerate(zip(*words, strict=True)) if len(set(column)) > 1]
    return [[row[position] for position in differing] for row in words]


def _differ(labelled: Sequence[tuple[str, Any]]) -> bool:
    """Whether the rows' values (one per row, with its label) are not all the same."""
    return len({value for _, value in labelled}) > 1


def _listed(labelled: Sequence[tuple[str, Any]]) -> str:
    return ", ".join(f"{label}: {value}" for label, value in labelled)


def _csv_cell(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:.4f}"


def _csv(header: list[str], labels: list[str], protocols: list[str], rows: list[list[float | str | None]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for label, protocol, row in zip(labels, protocols, rows, strict=True):
        writer.writerow([label, protocol, *("" if value is None else _csv_cell(value) for value in row)])
    return buffer.getvalue().rstrip("\n")
