"""`isegprobe import-seed`: a probe trained by the iSegProbe research code (the seed), as a run directory."""

from __future__ import annotations

import click

from isegprobe.commands.errors import reports_user_errors
from isegprobe.commands.options import allow_torchscript_option
from isegprobe.training.seed_import import import_seed_probe


@click.command("import-seed")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--store",
    "store_path",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="A store extracted with the featurizer the probe was trained on; it fixes the dims and working size.",
)
@click.option(
    "--upsampler-weights",
    default=None,
    help="The authors' checkpoint of the probe's frozen upsampler (LiFT, FeatUp JBU, LoftUp); iSegProbe "
    "checkpoints do not hold it.",
)
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
@allow_torchscript_option
@reports_user_errors
def import_seed(checkpoint: str, store_path: str, upsampler_weights: str | None, run_dir: str) -> None:
    """Convert a probe trained by the iSegProbe research code (its `last_checkpoint.pth` or `NNN.pth`) into
    RUN/last.safetensors + last.json.

    \b
    isegprobe import-seed runs/sbd_dinov2_noup/checkpoints/last_checkpoint.pth \\
        --store cache/vit_small_patch14_dinov2-grabcut-test-224.zarr --out runs/seed_dinov2_noup
    isegprobe evaluate --checkpoint runs/seed_dinov2_noup --online --zoom-in --flip --datasets grabcut \\
        --root data/GrabCut --out res/
    --zoom-in --flip is the seed's own evaluation protocol (its evaluate.py always zooms in and flips). The file
    is read without running the seed's code (torch's weights-only loader). The click encoder and head are mapped
    name for name, with the click channels reordered (the seed stacks previous mask, positive, negative).
    Early-fusion probes (the seed's patch-embed models) evaluate with --online.
    """
    metadata = import_seed_probe(checkpoint, store_path, run_dir, upsampler_weights)
    model = metadata["config"]["model"]
    click.echo(
        f"imported {checkpoint}: fusion {model['fusion']}, click encoder {model['click_encoder']['name']}, "
        f"upsampler {model['upsampler']['name']}, on {metadata['featurizer_provenance']['name']} features at "
        f"{metadata['preprocessing']['size']} px -> {run_dir}"
    )
