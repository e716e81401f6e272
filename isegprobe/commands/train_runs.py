"""Which runs one `isegprobe train` command makes: one, or several side by side (presets x variants), each in its
own folder under --out; and, for --resume, which runs a folder holds."""

from __future__ import annotations

import itertools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click

from isegprobe.config import TrainConfig
from isegprobe.config_loading import key_given_twice, load_train_config
from isegprobe.errors import UserError
from isegprobe.model import needs_featurizer_online
from isegprobe.output_files import CHECKPOINT_PREFIXES, run_files_in
from isegprobe.training.checkpoint import checkpoint_files, read_metadata, resume_config

_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class PlannedRun:
    folder: Path
    config: TrainConfig


def planned_runs(
    out: str,
    sources: tuple[str, ...],
    variants: tuple[str, ...],
    overrides: tuple[str, ...],
    flags: tuple[str, ...] = (),
) -> list[PlannedRun]:
    """One run per (--config, --variant) pair, the --set overrides under each variant's own, and `flags` (what an
    option of its own sets, such as --max-iters) over both, as it is over --set. A single run goes straight into
    `out`; several go into `out/NAME`: the preset (or YAML file's stem), the variant's name, or `PRESET-VARIANT` when
    there are several of both."""
    parsed = [_parse_variant(text) for text in variants]
    names = [_source_name(source) for source in sources]
    _refuse_shared_folders(out, sources, names)
    if len({name for name, _ in parsed}) != len(parsed):
        raise UserError(f"--variant: each name once, got {', '.join(name for name, _ in parsed)}")
    runs = []
    for (source, source_name), (variant, variant_overrides) in itertools.product(
        zip(sources, names, strict=True), parsed or [("", ())]
    ):
        if len(sources) == 1 and not parsed:
            folder = Path(out)
        else:
            label = "-".join(part for part in (source_name if len(sources) > 1 else "", variant) if part)
            folder = Path(out) / label
        runs.append(PlannedRun(folder, _variant_config(source, overrides, variant, variant_overrides, flags)))
    _refuse_nesting(Path(out), side_by_side=len(runs) > 1)
    return runs


def _refuse_nesting(out: Path, side_by_side: bool) -> None:
    """A run in `out` and runs side by side in its subfolders do not mix: `--resume --out` continues the run in `out`
    where there is one, else those in its subfolders, so one or the other would be left behind without a word."""
    if side_by_side:
        held = run_files_in(out)
        if held:
            raise UserError(
                f"--out {out} holds a run ({', '.join(held)}): the runs side by side would train into its subfolders, "
                f"and --resume --out {out} would continue that run alone; choose another --out"
            )
        return
    nested = [path.name for path in _subfolders(out) if run_files_in(path)]
    if nested:
        raise UserError(
            f"--out {out} holds runs side by side ({', '.join(nested)}): a run trained into it would be the only one "
            f"--resume --out {out} continues; choose another --out"
        )


def _refuse_shared_folders(out: str, sources: tuple[str, ...], names: list[str]) -> None:
    """Each --config trains into its own folder, named by `_source_name`: the same preset or file twice is one
    run given twice; two files of one name (`a/fast.yaml`, `b/fast.yaml`) would write one folder."""
    first: dict[str, str] = {}
    for source, name in zip(sources, names, strict=True):
        if name not in first:
            first[name] = source
        elif _same_source(first[name], source):
            raise UserError(f"--config: each preset or file once, got {', '.join(sources)}")
        else:
            raise UserError(
                f"--config {first[name]} and --config {source}: both would train into {Path(out) / name} (a run "
                "side by side is named by its file's stem); give the files different names"
            )


def _same_source(one: str, other: str) -> bool:
    if Path(one).is_file() and Path(other).is_file():
        return Path(one).resolve() == Path(other).resolve()
    return one == other


def _variant_config(
    source: str, overrides: tuple[str, ...], variant: str, variant_overrides: tuple[str, ...], flags: tuple[str, ...]
) -> TrainConfig:
    """The config of one run; a bad key or value among a variant's own overrides says which variant it is in."""
    try:
        return load_train_config(source, (*overrides, *variant_overrides, *flags))
    except UserError as error:
        if not variant_overrides:
            raise
        load_train_config(source, (*overrides, *flags))  # the fault is the shared ones': their own error, unprefixed
        raise UserError(f"--variant {variant!r}: {error}") from None


def resumed_runs(out: str, overrides: tuple[str, ...]) -> list[PlannedRun]:
    """The run in `out` (its last.json), or the runs side by side in its subfolders, with their saved configs."""
    root = Path(out)
    if (root / "last.json").is_file():
        return [PlannedRun(root, resume_config(root, overrides))]
    folders = sorted(path.parent for path in root.glob("*/last.json"))
    if not folders:
        _refuse_a_run_without_checkpoints(root, out)
        _refuse_runs_without_checkpoints([path for path in _subfolders(root) if run_files_in(path)], out)
        raise UserError(f"--resume: no last.json in {out} or in its subfolders (runs trained side by side)")
    for started in [path for path in _subfolders(root) if path not in folders and run_files_in(path)]:
        _refuse_a_run_left_behind(started, out)
        click.echo(f"--resume: {started} holds no checkpoint (its run stopped before its first): not resumed", err=True)
    return [PlannedRun(folder, resume_config(folder, overrides)) for folder in folders]


def resumed_online(runs: list[PlannedRun], online: bool) -> bool:
    """Whether resumed runs compute their features in the loop: as they did, which each records in its last.json
    (`online`). A run trained with --online went on from the store's features when --resume was given without it,
    and one trained from the store went on online when given it, without a word: either way its features changed
    mid-run, so its numbers were neither those of the run online nor from the store."""
    recorded = {run.folder: read_metadata(checkpoint_files(run.folder, "last")["metadata"]) for run in runs}
    from_store = [run.folder for run in runs if recorded[run.folder].get("online") is False]
    asked_online = [
        run.folder
        for run in runs
        if recorded[run.folder].get("online") is True and not needs_featurizer_online(run.config.model)
    ]
    if online and from_store:
        raise UserError(
            f"--online: the run in {from_store[0]} trained from the store's features; resumed online, its features "
            "would change mid-run and its numbers be neither those of a run from the store nor online; leave "
            "--online out, or train a new run online into another --out"
        )
    if asked_online and not online:
        click.echo(
            f"--resume: the run in {asked_online[0]} trained online (--online, the featurizer in the loop), and goes "
            "on so",
            err=True,
        )
        return True
    return online


def _refuse_a_run_without_checkpoints(root: Path, out: str) -> None:
    """A run killed before its first checkpoint leaves only its config.yaml and logs: nothing to resume, and the
    command that started it takes them over. Saying only that no last.json is there left the user to guess whether
    the run was lost or where it went."""
    left = run_files_in(root)
    if left and not any(name.startswith(CHECKPOINT_PREFIXES) for name in left):
        raise UserError(
            f"--resume: {out} holds no checkpoint to resume from: its run stopped before its first (it left "
            f"{', '.join(left)}); run the command that started it again, without --resume: it starts the run over "
            "and takes over what it left"
        )


def _refuse_runs_without_checkpoints(started: list[Path], out: str) -> None:
    """Runs side by side that all stopped before their first checkpoint: as for one run, nothing to resume, and
    the command that started them takes over what they left."""
    for folder in started:
        _refuse_a_run_left_behind(folder, out)
    if started:
        raise UserError(
            f"--resume: the runs side by side in {out} ({', '.join(path.name for path in started)}) hold no "
            "checkpoint to resume from: they stopped before their first; run the command that started them again, "
            "without --resume: it starts them over and takes over what they left"
        )


def _refuse_a_run_left_behind(folder: Path, out: str) -> None:
    """A run beside the others without a last.json is left out of their resume. One that never saved a checkpoint
    (its loss not finite before its first) has nothing to resume; one that did has lost its last checkpoint, and
    the others would train on without it."""
    kept = [path.name for name in ("last", "best") for path in checkpoint_files(folder, name).values() if path.exists()]
    if kept:
        raise UserError(
            f"--resume: {folder} has no last checkpoint to resume from (no last.json; it holds {', '.join(kept)}), "
            f"and the runs beside it would train on without it: put its last.* back, or move it out of {out}"
        )


def _subfolders(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_dir()) if folder.is_dir() else []


def _parse_variant(text: str) -> tuple[str, tuple[str, ...]]:
    try:
        words = shlex.split(text)
    except ValueError as error:  # an unbalanced quote
        raise UserError(f"--variant {text!r}: {str(error).lower()}") from None
    if not words or not _FOLDER_NAME.fullmatch(words[0]):
        raise UserError(
            f"--variant {text!r}: expected a name (letters, digits, '.', '_', '-') and then KEY=VALUE overrides, "
            "e.g. --variant 'lift model.upsampler.name=lift'"
        )
    bad = [word for word in words[1:] if "=" not in word]
    if bad:
        raise UserError(f"--variant {text!r}: {bad[0]!r} is not KEY=VALUE")
    twice = key_given_twice(words[1:])
    if twice is not None:
        raise UserError(f"--variant {text!r}: {twice} is given twice; give each key once")
    return words[0], tuple(words[1:])


def _source_name(source: str) -> str:
    """A run folder's name for a --config: a preset's own name, or a file's stem (`cfgs/fast.YAML`: `fast`), never
    its path, which would nest the run in folders of that path or point outside --out."""
    path = Path(source)
    return path.stem if path.suffix or path.name != source else source
