"""`isegprobe import-seed`: a probe trained by the iSegProbe research code, as a run directory."""

from __future__ import annotations

import click

from isegprobe.commands.errors import reports_user_errors
from isegprobe.commands.options import allow_torchscript_option
from isegprobe.errors import UserError
from isegprobe.weights_files import require_featurizer_weights, require_weights_file


@click.command("import-seed")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--weights",
    default=None,
    help="The featurizer's weights the probe was trained with: hub (the default: timm's copy of the official "
    "weights, needs the internet or a cache), or the file itself (DINOv2's dinov2_vits14_pretrain.pth, a timm/HF "
    "checkpoint of vit_small_patch16_224, ...). Not with --store, whose weights stand for it.",
)
@click.option(
    "--upsampler-weights",
    default=None,
    help="The authors' checkpoint of the probe's frozen upsampler (LiFT's .pth, FeatUp's "
    "dinov2_jbu_stack_cocostuff.ckpt, LoftUp's .ckpt); the research code's checkpoints do not hold it.",
)
@click.option(
    "--store",
    "store_path",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help="Optional: a store of the probe's featurizer at its crop size (extract-features --normalization "
    "imagenet), to evaluate the probe from that store; its weights then stand for --weights.",
)
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
@allow_torchscript_option
@reports_user_errors
def import_seed(
    checkpoint: str, weights: str | None, upsampler_weights: str | None, store_path: str | None, run_dir: str
) -> None:
    """Convert a probe trained by the iSegProbe research code (its `last_checkpoint.pth` or `NNN.pth`) into
    RUN/last.safetensors + last.json, on the same featurizer and upsampler.

    \b
    isegprobe import-seed exps/sbd_dinov2_lift/checkpoints/last_checkpoint.pth \\
        --weights dinov2_vits14_pretrain.pth --upsampler-weights lift_dinov2_s14.pth --out runs/imported_dinov2_lift
    isegprobe evaluate --checkpoint runs/imported_dinov2_lift --protocol iSegProbe --datasets grabcut \\
        --root data/GrabCut --out res/
    The research code is the one published with the iSegProbe paper (arXiv 2505.02075).
    --protocol iSegProbe evaluates as the research code's evaluate.py does (zoom-in, flip, 20 clicks), so the
    numbers compare with its own. The file is read without running the research code (torch's weights-only loader).
    The featurizer is rebuilt as the research code built its backbone: dinov2 -> dinov2_vits14 (the official
    model), vit -> timm's model of its arch with the last block's attention keys (its feat_type default) or tokens,
    mask_clip -> maskclip; images normalized with ImageNet statistics, as its base model does. The click encoder and
    head map name for name (click channels and, on keys, the head's input channels reordered to isegprobe's layout).
    """
    from isegprobe.training.seed_import import import_seed_probe

    if weights is not None and store_path is not None:
        raise UserError(
            f"--weights {weights} and --store {store_path}: the store's featurizer weights stand for the probe's, so "
            "--weights would not be read; give one of them"
        )
    require_featurizer_weights(weights, "--weights")
    if upsampler_weights is not None:
        require_weights_file(upsampler_weights, "--upsampler-weights")
    metadata = import_seed_probe(checkpoint, run_dir, weights or "hub", upsampler_weights, store_path)
    model = metadata["config"]["model"]
    click.echo(
        f"imported {checkpoint} as preset {metadata['imported_from']['preset']}: fusion {model['fusion']}, click "
        f"encoder {model['click_encoder']['name']}, upsampler {model['upsampler']['name']}, on "
        f"{metadata['featurizer_provenance']['name']} features at {metadata['preprocessing']['size']} px -> {run_dir}"
    )
