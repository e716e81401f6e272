"""Options and arguments that several commands share, so that they read and explain themselves the same way."""

from __future__ import annotations

import click

from isegprobe.errors import UserError

checkpoint_option = click.option(
    "--checkpoint",
    required=True,
    type=click.Path(exists=True),
    help="RUN_DIR (best, else last) or RUN/last.safetensors.",
)

# For the commands that read several evaluations (`plot iou-vs-clicks`, `report`).
results_argument = click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))

labels_option = click.option(
    "--labels",
    default=None,
    help="Comma-separated labels, one per RESULTS folder. Default: featurizer + upsampler + fusion of each probe.",
)


def split_labels(labels: str | None, results: tuple[str, ...]) -> list[str | None]:
    """One label (None: the default) per RESULTS folder."""
    if labels is None:
        return [None] * len(results)
    names = [label.strip() for label in labels.split(",")]
    if len(names) != len(results):
        raise UserError(f"--labels gives {len(names)} labels for {len(results)} RESULTS folders")
    return names
