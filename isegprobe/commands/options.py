"""Options and arguments that several commands share, so that they read and explain themselves the same way."""

from __future__ import annotations

from typing import Any

import click

from isegprobe.errors import UserError
from isegprobe.inference.results import default_labels, read_results

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
    help="Comma-separated labels, one per RESULTS folder. Default: featurizer + upsampler + fusion of each probe, "
    "and where two read the same, the protocol settings (zoom-in, flip, ...) or folder names that differ.",
)


def results_and_labels(results: tuple[str, ...], labels: str | None) -> list[tuple[str, dict[str, Any]]]:
    """(label, results.json document) per RESULTS folder: --labels' names when given, else names that tell the
    evaluations apart."""
    documents = [read_results(folder) for folder in results]
    names = default_labels(documents, results) if labels is None else _split_labels(labels, results)
    return list(zip(names, documents, strict=True))


def _split_labels(labels: str, results: tuple[str, ...]) -> list[str]:
    names = [label.strip() for label in labels.split(",")]
    if len(names) != len(results):
        raise UserError(f"--labels gives {len(names)} labels for {len(results)} RESULTS folders")
    return names
