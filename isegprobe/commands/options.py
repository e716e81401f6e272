"""Options and arguments that several commands share, so that they read and explain themselves the same way."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from isegprobe.errors import UserError
from isegprobe.inference.results import default_labels, read_results
from isegprobe.trust import ALLOW_TORCHSCRIPT, allowing_torchscript

F = TypeVar("F", bound=Callable)

checkpoint_option = click.option(
    "--checkpoint",
    required=True,
    type=click.Path(exists=True),
    help="RUN_DIR (best, else last) or RUN/last.safetensors.",
)


def allow_torchscript_option(command: F) -> F:
    """--allow-torchscript, for every command that may read a weights file (its own, or one a checkpoint or store
    names): only with it are TorchScript archives loaded, since loading one runs the code it carries."""

    @functools.wraps(command)
    def wrapper(*args: Any, allow_torchscript: bool, **kwargs: Any) -> Any:
        with allowing_torchscript(allow_torchscript):
            return command(*args, **kwargs)

    option = click.option(
        ALLOW_TORCHSCRIPT,
        "allow_torchscript",
        is_flag=True,
        help="Load weights files that are TorchScript archives (OpenAI's CLIP .pt). Loading one runs the code it "
        "carries: give this only for files from a source you trust.",
    )
    return option(wrapper)  # type: ignore[return-value]


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
