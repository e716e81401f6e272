"""Options and arguments that several commands share, so that they read and explain themselves the same way.
Light imports only, as in every command module: what an option's value needs (torch for --device) loads when it is
read (isegprobe/commands/__init__.py)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from isegprobe.errors import UserError
from isegprobe.trust import ALLOW_TORCHSCRIPT, allowing_torchscript

F = TypeVar("F", bound=Callable)

checkpoint_option = click.option(
    "--checkpoint",
    required=True,
    type=click.Path(exists=True),
    help="RUN_DIR (its best checkpoint, else its last) or one checkpoint of it: RUN/last.safetensors, "
    "RUN/best.safetensors or their .json.",
)


# The rule `devices.resolve_device` follows, as --help states it.
DEVICE_RULE = "cuda when a GPU is visible, else cpu"


def _device(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    from isegprobe.devices import resolve_device

    try:
        return resolve_device(value)
    except UserError as error:
        raise click.UsageError(str(error), ctx) from None


# One rule for every command that computes: the command receives the device already resolved.
device_option = click.option(
    "--device",
    default=None,
    metavar="cpu|cuda|cuda:N",
    callback=_device,
    help=f"Where to compute. Default: {DEVICE_RULE}.",
)


def renamed_option(
    name: str, dest: str, old_names: Sequence[str], *, required: bool = False, **attributes: Any
) -> Callable[[F], F]:
    """`click.option(name, dest, **attributes)` for a single value, still accepting the option's former names,
    hidden from --help: scripts written for them keep working, and each use prints a one-line warning that names
    the new spelling. `required` is checked once the old names are read, since either spelling may give the value."""

    def decorate(command: F) -> F:
        old_dests = {old: f"{dest}__{old.lstrip('-').replace('-', '_')}" for old in old_names}

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, old_dest in old_dests.items():
                value = kwargs.pop(old_dest)
                if value is None:
                    continue
                click.echo(f"warning: {old} is deprecated; use {name}", err=True)
                if kwargs[dest] is not None:
                    raise click.UsageError(f"{old} is the former name of {name}: give one of them")
                kwargs[dest] = value
            if required and kwargs[dest] is None:
                raise click.UsageError(f"Missing option '{name}'.")
            return command(*args, **kwargs)

        decorated = wrapper
        hidden = {key: value for key, value in attributes.items() if key != "help"}
        for old, old_dest in old_dests.items():
            decorated = click.option(old, old_dest, hidden=True, **hidden)(decorated)
        shown = {**attributes, "help": f"{attributes.get('help', '')}  [required]"} if required else attributes
        return click.option(name, dest, **shown)(decorated)  # type: ignore[return-value]

    return decorate


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
    from isegprobe.inference.result_labels import default_labels
    from isegprobe.inference.results import read_results

    resolved = [Path(folder).resolve() for folder in results]
    twice = next((folder for index, folder in enumerate(results) if resolved[index] in resolved[:index]), None)
    if twice is not None:
        raise UserError(f"RESULTS folder {twice} is given twice: its rows and curves would be indistinguishable")
    documents = [read_results(folder) for folder in results]
    names = default_labels(documents, results) if labels is None else _split_labels(labels, results)
    return list(zip(names, documents, strict=True))


def _split_labels(labels: str, results: tuple[str, ...]) -> list[str]:
    names = [label.strip() for label in labels.split(",")]
    if len(names) != len(results):
        raise UserError(f"--labels gives {len(names)} labels for {len(results)} RESULTS folders")
    if "" in names:
        raise UserError(f"--labels {labels!r}: label {names.index('') + 1} is empty; each row and curve needs a name")
    broken = next((index for index, name in enumerate(names, 1) if "\n" in name or "\r" in name), None)
    if broken is not None:
        raise UserError(f"--labels {labels!r}: label {broken} holds a line break, which would split its table row")
    return names
