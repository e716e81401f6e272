"""Names for evaluations shown side by side (report rows, plot curves, the demo's probes): what the probe is
(featurizer + upsampler + fusion), and where two read the same, what tells them apart."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from isegprobe.errors import UserError
from isegprobe.inference.results import RUN_INFO_DEFAULTS


def probe_label(document: dict[str, Any], results_dir: str | Path) -> str:
    """featurizer + upsampler + fusion, as the evaluated probe was built; the folder's name for results written
    before evaluations recorded that."""
    parts = [document.get(key) for key in ("featurizer", "upsampler", "fusion")]
    if not all(parts):
        return Path(results_dir).resolve().name
    return " + ".join(parts)


# How each protocol setting of results.json reads in a label: (key, when on, when off).
_PROTOCOL_WORDS = (("zoom_in", "zoom-in", "no zoom-in"), ("flip", "flip", "no flip"), ("online", "online", "cached"))


def default_labels(documents: Sequence[dict[str, Any]], results_dirs: Sequence[str | Path]) -> list[str]:
    """Names for evaluations shown side by side (report rows, plot curves): each one's `probe_label`. Where two
    would read the same, what tells them apart follows in brackets: the protocol settings that differ among them
    (zoom-in, flip, online, threshold), then the training runs the checkpoints are of (two runs of one recipe), then
    the checkpoints' training steps (a run's best and last), and where those are the same, the results folders'
    names; a folder's name comes with its parent folders where the names alone are the same."""
    labels = [probe_label(document, folder) for document, folder in zip(documents, results_dirs, strict=True)]
    protocols = [protocol_words(document) for document in documents]
    runs = [[f"run {name}"] for name in _run_names([_run_folder(document) for document in documents])]
    steps = [[f"step {document.get('checkpoint_step', '?')}"] for document in documents]
    return told_apart(labels, protocols, runs, steps, [[name] for name in _folder_names(results_dirs)])


def _run_folder(document: dict[str, Any]) -> str:
    """The folder of the checkpoint evaluated (results.json records the checkpoint file's path as given)."""
    return str(Path(str(document.get("checkpoint", "?"))).parent)


def _run_names(folders: Sequence[str | Path]) -> list[str]:
    """`_folder_names` of training runs, where a run folder named `run` (the quickstart's) comes with its parent:
    `run quickstart_cpu/run`, not `run run`."""
    names = _folder_names(folders)
    return [
        str(Path(*Path(folder).resolve().parts[-2:])) if name == "run" else name
        for name, folder in zip(names, folders, strict=True)
    ]


def _folder_names(folders: Sequence[str | Path]) -> list[str]:
    """Each folder's name, after as many of its parent folders as it takes to differ from the other folders' names:
    `a/results` and `b/results` rather than `results` twice."""
    paths = [Path(folder).resolve() for folder in folders]
    return [_shortest_distinct_tail(path, [other for other in paths if other != path]) for path in paths]


def _shortest_distinct_tail(path: Path, others: Sequence[Path]) -> str:
    for length in range(1, len(path.parts)):
        tail = path.parts[-length:]
        if all(other.parts[-length:] != tail for other in others):
            return str(Path(*tail))
    return str(path)


def refuse_repeated_labels(labels: Sequence[str]) -> None:
    """Labels given for evaluations side by side must differ: a table or legend that names two alike cannot say
    which numbers are whose."""
    repeated = list(dict.fromkeys(label for label in labels if labels.count(label) > 1))
    if repeated:
        raise UserError(
            f"--labels: {', '.join(repr(label) for label in repeated)} given to more than one RESULTS folder; give "
            "each its own label"
        )


def told_apart(labels: Sequence[str], *details: Sequence[Sequence[str]]) -> list[str]:
    """`labels`, where each group that reads the same gets in brackets those of its `details` (a list of words per
    label, for each kind of detail in turn) that differ within the group, until the kinds run out."""
    notes: list[list[str]] = [[] for _ in labels]
    for words in details:
        _add_differences(labels, notes, words)
    return [f"{label} ({', '.join(note)})" if note else label for label, note in zip(labels, notes, strict=True)]


def protocol_words(document: dict[str, Any]) -> list[str]:
    words = [on if document.get(key) else off for key, on, off in _PROTOCOL_WORDS]
    protocol = f"{document.get('protocol', RUN_INFO_DEFAULTS['protocol'])} protocol"
    return [protocol, *words, f"threshold {float(document.get('threshold', 0.5)):g}"]


def _add_differences(labels: Sequence[str], notes: list[list[str]], details: Sequence[Sequence[str]]) -> None:
    """Within each group of labels that read the same so far (label and notes), add to the notes those of the
    `details` that differ within the group."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault((label, *notes[index]), []).append(index)
    for group in groups.values():
        differing = [
            position for position in range(len(details[group[0]])) if len({details[i][position] for i in group}) > 1
        ]
        for index in group:
            notes[index].extend(details[index][position] for position in differing)
