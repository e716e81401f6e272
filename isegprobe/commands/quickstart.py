"""`isegprobe quickstart`: the whole pipeline on the built-in data, nothing to download; about a minute on a CPU."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from isegprobe.cache.schema import store_name
from isegprobe.commands.errors import reports_user_errors
from isegprobe.commands.limits import WORKING_SIZE
from isegprobe.commands.options import allow_torchscript_option, device_option
from isegprobe.commands.train import exit_if_stopped
from isegprobe.config_loading import load_train_config
from isegprobe.errors import UserError
from isegprobe.inference.metrics import curve_warnings, format_miou_curves, format_table
from isegprobe.interrupts import exit_status, how_stopped
from isegprobe.locks import shared_locks
from isegprobe.units import human_bytes

QUICKSTART_FEATURIZER = "vit_small_patch14_dinov2"
QUICKSTART_SIZE = 224
QUICKSTART_PRESET = "quickstart"


@click.command("quickstart")
@click.option(
    "--featurizer",
    default=QUICKSTART_FEATURIZER,
    show_default=True,
    help="Any name extract-features takes (vit_small_patch16_dinov3, convnext_atto, ...).",
)
@click.option(
    "--size",
    default=QUICKSTART_SIZE,
    show_default=True,
    type=WORKING_SIZE,
    help="Working size in pixels; a multiple of the featurizer's patch size or stride.",
)
@click.option(
    "--out",
    default="quickstart",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for stores, run and results.",
)
@click.option(
    "--weights",
    default="random",
    show_default=True,
    help="Featurizer weights: random (works offline; the numbers then mean nothing), hub, or a checkpoint file.",
)
@click.option("--max-iters", default=200, show_default=True, type=click.IntRange(min=1), help="Training steps.")
@click.option(
    "--max-clicks",
    default=20,
    show_default=True,
    type=click.IntRange(1, 100),
    help="Clicks per object in the evaluation.",
)
@device_option
@allow_torchscript_option
@reports_user_errors
def quickstart(**options) -> None:
    """Extract, train and evaluate on the built-in scenes, by default with a ViT-S/14 (DINOv2 architecture) at 224 px.

    \b
    1. extract-features: builtin/train (24 scenes) and builtin/test (12 scenes), views identity + hflip
    2. train: the `quickstart` preset (a low-resolution probe: identity upsampler, head width 64) from the cache
    3. evaluate: RITM's clicker on every test object, from the cache (the featurizer is not loaded), with the last
       checkpoint and --flip; the same numbers again: `evaluate --checkpoint OUT/run/last.json
       --store OUT/cache/FEATURIZER-builtin-test-SIZE.zarr --flip --out DIR`
    With --weights random the featurizer is untrained: the pipeline runs, but the numbers say nothing about the model.
    """
    again = _the_same_command(click.get_current_context())
    try:
        _quickstart(**options, again=again)
    except KeyboardInterrupt as interrupt:
        click.echo(
            f"quickstart: {how_stopped(interrupt)}; the items extracted and the run's last checkpoint are kept in "
            f"{options['out']}, and `{again}` goes on from there",
            err=True,
        )
        raise SystemExit(exit_status(interrupt)) from None


def _quickstart(
    featurizer: str,
    size: int,
    out: str,
    weights: str,
    max_iters: int,
    max_clicks: int,
    device: str,
    again: str,
) -> None:
    from isegprobe.cache import CachedDataset
    from isegprobe.cache.extract import ExtractionRequest, extract
    from isegprobe.inference.runner import EvaluationRequest, run_evaluation
    from isegprobe.plots.iou_vs_clicks import plot_iou_vs_clicks, read_evaluation
    from isegprobe.training import train
    from isegprobe.training.checkpoint import read_metadata

    out_dir = Path(out)
    run_dir = out_dir / "run"
    _refuse_a_run_of_other_features(run_dir, store_name(featurizer, "builtin", "train", size))
    stores = {}
    for split in ("train", "test"):
        click.echo(f"[1/3 extract] {featurizer} features of builtin/{split} at {size} px")
        result = extract(
            ExtractionRequest(
                featurizer=featurizer,
                weights=weights,
                dataset="builtin",
                root=None,
                split=split,
                size=size,
                views="identity,hflip",
                device=device,
                out=str(out_dir / "cache"),
                workers=0,
            )
        )
        stores[split] = result.path
        click.echo(
            f"  {result.items_extracted} new items, {result.items_total} in {result.path} "
            f"({human_bytes(result.nbytes)})"
        )
    click.echo(f"[2/3 train] preset {QUICKSTART_PRESET} for {max_iters} steps from {stores['train']}")
    config = load_train_config(QUICKSTART_PRESET, [f"schedule.max_iters={max_iters}"])
    resume = (run_dir / "last.json").is_file()
    if resume and read_metadata(run_dir / "last.json").get("step") == max_iters:
        # The same command again, as the README says to: a note, where train warns of a run past its schedule.
        click.echo(f"  {run_dir} has taken its {max_iters} steps already: nothing left to train")
    else:
        if resume:
            click.echo(f"  resuming the run in {run_dir} from its last checkpoint (delete the folder to start over)")
        with shared_locks(stores["train"]):
            dataset = CachedDataset(stores["train"], views=config.data.views)
            summary = train(config, dataset, run_dir, device=device, resume=resume)
        exit_if_stopped(summary, again)
        click.echo(f"  {summary.progress()}")
        click.echo(f"  step {summary.step}; checkpoints, TensorBoard logs and scalars.csv in {run_dir}")
        if (warning := summary.nothing_to_segment()) is not None:
            click.echo(warning, err=True)
    click.echo(
        f"[3/3 evaluate] {max_clicks} clicks per object on builtin/test, from the cache, with the last checkpoint "
        "and --flip"
    )
    results_dir = out_dir / "results"
    request = EvaluationRequest(
        checkpoint=str(run_dir / "last.safetensors"),
        out_dir=str(results_dir),
        stores=[str(stores["test"])],
        max_clicks=max_clicks,
        flip=True,
        device=device,
        vis_preds=6,
        overwrite=True,  # a second quickstart trains on, so the first one's results are of another checkpoint
    )
    summaries = run_evaluation(request)
    click.echo(format_table(summaries))
    click.echo(format_miou_curves(summaries))
    for warning in curve_warnings(summaries):
        click.echo(warning, err=True)
    curves = plot_iou_vs_clicks([read_evaluation(results_dir)], results_dir / "iou_vs_clicks.png")
    click.echo(f"  results, per-object IoU curves, overlays and the mIoU plot ({curves[0].name}) in {results_dir}")


def _the_same_command(context: click.Context) -> str:
    """The command line that goes on where this one stops: the options given, as given (the run, the stores and the
    results are of that featurizer, size and schedule)."""
    words = ["isegprobe", "quickstart"]
    for parameter in context.command.params:
        source = context.get_parameter_source(parameter.name)
        if source is click.core.ParameterSource.DEFAULT or not parameter.opts:
            continue
        value = context.params[parameter.name]
        if isinstance(parameter, click.Option) and parameter.is_flag:
            words += [parameter.opts[0]] if value else []
        else:
            words += [parameter.opts[0], str(value)]
    return shlex.join(words)


def _refuse_a_run_of_other_features(run_dir: Path, train_store: str) -> None:
    """A quickstart in a folder whose run trained on another featurizer's or size's store would extract its own
    stores and only then be refused, by the resume: say so before any work."""
    from isegprobe.training.checkpoint import read_metadata

    metadata = run_dir / "last.json"
    recorded = read_metadata(metadata).get("store_path") if metadata.is_file() else None
    trained_on = Path(str(recorded)).name
    if recorded is not None and trained_on != train_store:
        raise UserError(
            f"{run_dir}: this folder's run trained on {trained_on}, where this quickstart would train on "
            f"{train_store}; give each featurizer and size its own --out (the same command again resumes in its "
            "folder), or delete the run folder to train anew"
        )
