"""`isegprobe train`: fit a probe on a feature store (stage two)."""

from __future__ import annotations

import shlex
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from isegprobe.commands.errors import reports_user_errors
from isegprobe.commands.options import allow_torchscript_option, device_option, renamed_option
from isegprobe.config import DataConfig
from isegprobe.config_loading import key_given_twice, load_train_config
from isegprobe.errors import UserError
from isegprobe.locks import shared_locks
from isegprobe.presets import list_presets
from isegprobe.torchrun_env import current_rank, ranks_on_this_machine
from isegprobe.weights_files import require_featurizer_weights, require_recorded_weights_file, require_weights_file

if TYPE_CHECKING:
    from isegprobe.cache import CachedDataset
    from isegprobe.commands.train_runs import PlannedRun
    from isegprobe.distributed import LostRank
    from isegprobe.featurizers import Featurizer
    from isegprobe.training import TrainSummary

# The research recipe's full-resolution head takes minutes a step on a CPU (188 s on 2 cores at 224 px), so a user who
# names no preset gets one that suits the device the run will use.
DEFAULT_PRESETS = {"cuda": "sbd_224", "cpu": "fast_cpu"}


@click.command("train")
@click.option(
    "--config",
    "config_sources",
    multiple=True,
    help=f"Preset name ({', '.join(list_presets())}) or YAML file. Without it the preset is picked by the device "
    f"(see --device): {DEFAULT_PRESETS['cuda']} (the research recipe) on CUDA, {DEFAULT_PRESETS['cpu']} (a light "
    "head) on CPU; with --resume, the run's own. Given several times, the presets train side by side (see "
    "--variant).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. optim.lr=1e-4 (each key once).",
)
@click.option(
    "--variant",
    "variants",
    multiple=True,
    metavar="'NAME KEY=VALUE ...'",
    help="A probe to train side by side with the others: the config with these overrides, into --out/NAME. Each "
    "batch is read once and every probe takes its own step on it (own clicks, optimizer, checkpoints, logs), with "
    "the numbers it gets alone; the probes must share data.*, sampler.*, seed and the schedule's length.",
)
@renamed_option(
    "--store",
    "store_path",
    ["--cache"],
    type=click.Path(exists=True, file_okay=False),
    help="Training store, extract-features' output (with --resume: the run's own, unless given).",
)
@renamed_option(
    "--val-store",
    "val_store_path",
    ["--val-cache"],
    type=click.Path(exists=True, file_okay=False),
    help="Store to pick the best checkpoint on (with --resume: the run's own, unless given).",
)
@click.option("--out", "run_dir", type=click.Path(file_okay=False), help="Run directory for checkpoints and logs.")
@click.option(
    "--show-config",
    is_flag=True,
    help="Print the config that --config and --set make, every key with its value and what it takes, and exit "
    "(no --store or --out needed): the keys --set and --variant change.",
)
@click.option(
    "--online", is_flag=True, help="Compute features in the loop with the frozen featurizer instead of reading them."
)
@click.option(
    "--featurizer",
    "featurizer_name",
    default=None,
    help="Featurizer for --online or an early-fusion probe (default: the store's).",
)
@click.option(
    "--weights",
    "featurizer_weights",
    default=None,
    help="Featurizer weights for --online or an early-fusion probe: random, hub or a file (default: the store's).",
)
@click.option(
    "--resume", is_flag=True, help="Continue the run in --out from its last checkpoint, at the same step and lr."
)
@click.option(
    "--max-iters",
    type=click.IntRange(min=0),
    default=None,
    help="Stop after this many optimizer steps in total, or at the end of schedule.epochs if that comes first; 0 "
    "saves the untrained probe (a baseline to evaluate).",
)
@device_option
@click.option("--wandb", "use_wandb", is_flag=True, help="Also log to Weights & Biases (WANDB_MODE=offline works).")
@allow_torchscript_option
@reports_user_errors
def train(
    config_sources: tuple[str, ...],
    overrides: tuple[str, ...],
    variants: tuple[str, ...],
    store_path: str | None,
    val_store_path: str | None,
    run_dir: str,
    online: bool,
    featurizer_name: str | None,
    featurizer_weights: str | None,
    resume: bool,
    max_iters: int | None,
    device: str,
    use_wandb: bool,
    show_config: bool,
) -> None:
    """Train an interactive-segmentation probe on cached frozen features.

    \b
    isegprobe train --config sbd_224 --store cache/vit_small_patch14_dinov2-sbd-train-224.zarr --out runs/dinov2_s14
      --set 'data.views=[rcrop1,rcrop2,rcrop3,rcrop4,rcrop5,rcrop6,rcrop7,rcrop8]'   (the research recipe, on a GPU)
    isegprobe train --config fast_cpu --set model.head.width=32 --store STORE --out RUN --max-iters 200
    torchrun --nproc-per-node 4 -m isegprobe train --config sbd_224 --store STORE --out RUN
    isegprobe train --config sbd_224 --store STORE --out RUNS --variant 'bilinear model.upsampler.name=bilinear'
      --variant 'lift model.upsampler.name=lift model.upsampler.fine_tune=true'   (RUNS/bilinear, RUNS/lift)
    Writes into --out (into --out/NAME for each of several runs): last/best checkpoints (.safetensors weights +
    .json config and provenance), tensorboard/ and scalars.csv (loss, pixel BCE, IoU, lr). Early-fusion presets
    (sbd_research, sbd_*_patch-embed*) run the featurizer online. --resume --out RUNS continues runs trained side
    by side together.
    """
    from isegprobe.cache import CachedDataset
    from isegprobe.cache.store import refuse_output_inside_a_store
    from isegprobe.commands.train_runs import planned_runs, resumed_online, resumed_runs
    from isegprobe.config_reference import annotated_config
    from isegprobe.distributed import LostRank
    from isegprobe.model import needs_featurizer_online
    from isegprobe.training.run_loop import train_side_by_side

    twice = key_given_twice(overrides)
    if twice is not None:
        raise UserError(f"--set {twice} is given twice; give each key once")
    flags = (f"schedule.max_iters={max_iters}",) if max_iters is not None else ()
    if show_config:
        sources = config_sources or (_default_preset(device),)
        for source in sources:
            heading = f"# --config {source}\n" if len(sources) > 1 else ""
            click.echo(heading + annotated_config(load_train_config(source, (*overrides, *flags))), nl=False)
        return
    if run_dir is None:
        raise click.UsageError("Missing option '--out' (the run directory).")
    if resume:
        if config_sources or variants:
            click.echo(
                "--resume: using the runs' saved configs; --config and --variant are ignored (--set still applies)",
                err=True,
            )
        runs = resumed_runs(run_dir, (*overrides, *flags))
        online = resumed_online(runs, online)
        store_path, val_store_path = _run_stores(str(runs[0].folder), store_path, val_store_path)
    else:
        if store_path is None:
            raise click.UsageError("Missing option '--store' (the training store).")
        runs = planned_runs(run_dir, config_sources or (_default_preset(device),), variants, overrides, flags)
        _say_when_steps_take_minutes(runs, device)
    needs_featurizer = online or any(needs_featurizer_online(run.config.model) for run in runs)
    _refuse_featurizer_options_left_unread(needs_featurizer, featurizer_name, featurizer_weights)
    require_featurizer_weights(featurizer_weights, "--weights")
    _require_upsampler_weights(runs, resume)

    refuse_output_inside_a_store(run_dir)
    with shared_locks(store_path, val_store_path):  # no extraction rewrites them under the training
        dataset = _training_dataset(store_path, runs[0].config.data)
        val_dataset = CachedDataset(val_store_path) if val_store_path else None
        featurizer = _featurizer(dataset.provenance, featurizer_name, featurizer_weights) if needs_featurizer else None
        device_source = click.get_current_context().get_parameter_source("device")
        given_device = device if device_source is not ParameterSource.DEFAULT else None
        how_to_continue = _resume_command(run_dir, online, featurizer_name, featurizer_weights, given_device)
        try:
            summaries = train_side_by_side(
                [run.config for run in runs],
                dataset,
                [run.folder for run in runs],
                featurizer=featurizer,
                online=online,
                resume=resume,
                device=device,
                use_wandb=use_wandb,
                val_dataset=val_dataset,
            )
        except LostRank as lost:
            raise UserError(_lost_rank_message(lost, how_to_continue)) from None
    exit_if_stopped(summaries[0], how_to_continue, len(summaries))
    if current_rank() == 0:  # under torchrun, the rank that logs and saves
        for summary in summaries:
            if summary.diverged:
                since = "" if summary.diverged_from is None else f" from step {summary.diverged_from}"
                click.echo(
                    f"stopped at step {summary.step}, its loss no longer finite{since}: {summary.run_dir} (below)"
                )
                continue
            best = (
                "no best checkpoint yet"
                if summary.best_metric is None
                else f"best {summary.best_metric_name} {summary.best_metric:.4f} (step {summary.best_step})"
            )
            click.echo(summary.progress())
            click.echo(f"trained to step {summary.step}; {best}; checkpoints in {summary.run_dir}")
            if (warning := summary.nothing_to_segment()) is not None:
                click.echo(warning, err=True)
    diverged = [summary for summary in summaries if summary.diverged]
    if diverged:
        how = (
            f"{len(diverged)} of {len(summaries)} runs stopped early, the others trained to the end"
            if len(diverged) < len(summaries)
            else "every run stopped early"
        )
        raise UserError(f"{how}: " + "; ".join(f"{summary.run_dir}: {summary.diverged}" for summary in diverged))


def _default_preset(device: str) -> str:
    """The preset for a run without --config, chosen by the device the run trains on (already resolved by
    --device's rule), said as it is chosen."""
    where = device.split(":")[0]
    preset = DEFAULT_PRESETS[where]
    why = (
        "the research recipe, for a GPU"
        if where == "cuda"
        else "a light head after the bilinear upsampler, seconds a step on a CPU at 224 px (a learned upsampler "
        "such as lift more; --set model.upsampler.name=identity keeps the head on the feature grid, under a second); "
        "--config sbd_224 runs the research recipe, minutes a step here"
    )
    if current_rank() == 0:
        click.echo(f"no --config: preset {preset} ({why})", err=True)
    return preset


def _say_when_steps_take_minutes(runs: Sequence[PlannedRun], device: str) -> None:
    """Said before the first step on a CPU: the research recipe's full head on the upsampled features takes minutes a
    step there, and a newcomer who copied the recipe's command would otherwise wait on a progress bar to learn it."""
    slow = [
        run.folder.name
        for run in runs
        if run.config.model.head.width is None and run.config.model.upsampler.name != "identity"
    ]
    if slow and device == "cpu" and current_rank() == 0:
        which = "" if len(runs) == 1 else f" ({', '.join(slow)})"
        click.echo(
            f"note: model.head.width null{which} runs the research recipe's full head on the upsampled features, "
            "minutes a step on a CPU; --config fast_cpu or quickstart train in seconds a step",
            err=True,
        )


def exit_if_stopped(summary: TrainSummary, how_to_continue: str, side_by_side: int = 1) -> None:
    """After a run stopped by SIGINT or SIGTERM: say where it stands and exit with the shell's status for that
    signal (128 + its number), so that job scripts see the run did not finish. `summary` is the first of
    `side_by_side` runs that stopped together at the same step."""
    if summary.stopped_by is None:
        return
    if current_rank() == 0:
        saved = summary.run_dir / "last.safetensors"
        others = side_by_side - 1
        where = f"{saved}" + ("" if not others else f" and in {others} other run{'s' if others > 1 else ''}")
        click.echo(
            f"{summary.stopped_by}: stopped after step {summary.step}, saved as {where}; `{how_to_continue}` "
            "continues the same schedule",
            err=True,
        )
    raise SystemExit(128 + signal.Signals[summary.stopped_by].value)


def _lost_rank_message(lost: LostRank, how_to_continue: str) -> str:
    """What a rank says when another one went away: the step it got to, what each run keeps, and how to go on."""
    kept = [
        f"{folder}: last checkpoint at step {step}" if step is not None else f"{folder}: no checkpoint written yet"
        for folder, step in lost.kept.items()
    ]
    return (
        f"rank {current_rank()}: {lost} (it failed or was killed; its own output says why). "
        + "; ".join(kept)
        + f". `{how_to_continue}` continues from there"
    )


def _run_stores(run_dir: str, store_path: str | None, val_store_path: str | None) -> tuple[str, str | None]:
    """The stores a resumed run trains and validates on: those given, else those its last checkpoint recorded."""
    from isegprobe.training.checkpoint import checkpoint_files, read_metadata

    metadata = read_metadata(checkpoint_files(run_dir, "last")["metadata"])
    if store_path is None:
        store_path = metadata.get("store_path") or None
        if store_path is None or not Path(store_path).is_dir():
            raise UserError(
                f"--resume: the training store the run in {run_dir} recorded ({store_path}) is not there; "
                "pass --store STORE"
            )
    if val_store_path is None:
        val_store_path = metadata.get("val_store_path") or None
        if val_store_path is not None and not Path(val_store_path).is_dir():
            raise UserError(
                f"--resume: the validation store the run in {run_dir} recorded ({val_store_path}) is not there; "
                "pass --val-store STORE"
            )
    return store_path, val_store_path


def _resume_command(
    run_dir: str, online: bool, featurizer_name: str | None, featurizer_weights: str | None, device: str | None
) -> str:
    """The command that continues this run: the run recorded its stores and config; what it did not record is
    repeated here (under torchrun, the launcher with this node's processes; other nodes' options are the user's),
    the device where one was given (without it a GPU machine would resume a CPU run on its GPU)."""
    ranks = ranks_on_this_machine()
    launcher = ["isegprobe"] if ranks == 1 else ["torchrun", "--nproc-per-node", str(ranks), "-m", "isegprobe"]
    words = [*launcher, "train", "--resume", "--out", run_dir]
    words += ["--online"] if online else []
    words += ["--featurizer", featurizer_name] if featurizer_name else []
    words += ["--weights", featurizer_weights] if featurizer_weights else []
    words += ["--device", device] if device else []
    return shlex.join(words)


def _training_dataset(store_path: str, data: DataConfig) -> CachedDataset:
    """The training store's entries of `data.views`, once every way the store does not fit `data` is named at once:
    a research preset's store differs from a plain one in featurizer, statistics, size and views, and told one at a
    time they took an extraction each."""
    from isegprobe.cache import CachedDataset, FeatureStore
    from isegprobe.training.store_checks import check_store_fits

    attrs = FeatureStore.open(store_path).attrs
    check_store_fits(data, attrs["preprocessing"], attrs["featurizer"], attrs["views"])
    return CachedDataset(store_path, views=data.views)


def _require_upsampler_weights(runs: Sequence[PlannedRun], resume: bool) -> None:
    """Each run's upsampler file, before the store is read and the featurizer and probe are built. A resumed run
    reads it too, to build its probe before the checkpoint's weights replace the file's."""
    for run in runs:
        path = run.config.model.upsampler.weights
        if path is None:
            continue
        key = "model.upsampler.weights" if len(runs) == 1 else f"{run.folder}: model.upsampler.weights"
        try:
            require_weights_file(path, key)
        except UserError as error:
            if not resume:
                raise
            raise UserError(
                f"{error}; the run's config names it, and --set model.upsampler.weights=PATH says where it is now"
            ) from None


def _refuse_featurizer_options_left_unread(needs_featurizer: bool, name: str | None, weights: str | None) -> None:
    """--featurizer and --weights choose the featurizer that runs in the loop; a run from the store's features runs
    none, and took them without a word, so a user who meant another model trained on the store's."""
    given = [f"{option} {value}" for option, value in (("--featurizer", name), ("--weights", weights)) if value]
    if given and not needs_featurizer:
        raise UserError(
            f"{' and '.join(given)}: no featurizer runs in this training (it reads the store's features), so they "
            "would not be read; pass --online to run that featurizer in the loop, or leave them out"
        )


def _featurizer(provenance: dict[str, Any], name: str | None, weights: str | None) -> Featurizer:
    """The featurizer that runs in the loop: --featurizer and --weights, by default the store's (whose weights
    file, on another machine than the one that extracted it, may be somewhere else)."""
    from isegprobe import featurizers
    from isegprobe.cache.schema import check_same_featurizer

    recorded = provenance.get("weights")
    if weights is None:
        require_recorded_weights_file(
            recorded, "the training store's features were extracted with (the store records it)"
        )
    name = name or provenance.get("name")
    weights = weights or recorded
    if not name or not weights:
        raise UserError(
            "--online: the store's provenance does not name its featurizer; pass --featurizer and --weights"
        )
    featurizer = featurizers.recreate_featurizer({**provenance, "name": name, "weights": weights})
    if "name" in provenance:  # a store that names its featurizer: online features must be the store's
        check_same_featurizer(
            provenance,
            featurizer.provenance,
            f"--online with --featurizer {name} --weights {weights}",
            trained_on="training store",
        )
    return featurizer
