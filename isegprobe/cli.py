"""The `isegprobe` command: one click group, one module per subcommand under `isegprobe/commands/`.

Subcommands are imported by name when they are asked for, not when the group starts, and a command module imports
the libraries its command runs (torch, timm, zarr, tensorstore, matplotlib: 3 to 7 s on two CPU cores) only once it
runs (isegprobe/commands/__init__.py): `isegprobe --help`, a command's --help, a mistyped option and completing a
subcommand's name come back at once.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import warnings
from typing import Any, NamedTuple

import click
from click.shell_completion import CompletionItem

from isegprobe import __version__
from isegprobe.errors import quiet_disk_errors_in_threads
from isegprobe.interrupts import exit_status, how_stopped


class LazyCommand(NamedTuple):
    """Where a subcommand lives ("module:attribute"), and the first sentence of its help for the command list."""

    location: str
    summary: str


COMMANDS = {
    "cache": LazyCommand(
        "isegprobe.commands.cache:cache", "Inspect, verify and summarise feature stores written by extract-features."
    ),
    "datasets": LazyCommand(
        "isegprobe.commands.datasets:datasets", "List, check and download the datasets the probe reads."
    ),
    "demo": LazyCommand(
        "isegprobe.commands.demo:demo", "Serve a local web page on which a probe segments what you click."
    ),
    "evaluate": LazyCommand(
        "isegprobe.commands.evaluate:evaluate",
        "Simulate RITM's clicker on every object: NoC@80/85/90, NoF@85/90, IoU@1, the mIoU curve, seconds per click.",
    ),
    "extract-features": LazyCommand(
        "isegprobe.commands.extract:extract_features",
        "Run a frozen featurizer once over a dataset and cache its features in a Zarr v3 store.",
    ),
    "import-seed": LazyCommand(
        "isegprobe.commands.import_seed:import_seed",
        "Convert a probe trained by the iSegProbe research code (its `last_checkpoint.pth` or `NNN.pth`) into "
        "RUN/last.safetensors + last.json, on the same featurizer and upsampler.",
    ),
    "plot": LazyCommand("isegprobe.commands.plot:plot", "Pictures of what the features and the probes do."),
    "quickstart": LazyCommand(
        "isegprobe.commands.quickstart:quickstart",
        "Extract, train and evaluate on the built-in scenes, by default with a ViT-S/14 (DINOv2 architecture) at 224 "
        "px.",
    ),
    "report": LazyCommand(
        "isegprobe.commands.report:report",
        "One row per evaluation (RESULTS: folders written by `isegprobe evaluate --out`), and per dataset the NoC@85, "
        "NoC@90 and mIoU after --miou-at clicks, as the papers' tables compare probes.",
    ),
    "train": LazyCommand(
        "isegprobe.commands.train:train", "Train an interactive-segmentation probe on cached frozen features."
    ),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported by name on first use; the command list in --help is drawn from
    the summaries, exactly as click draws it from the commands' own help (tests/test_cli.py checks both agree)."""

    def __init__(self, *args, lazy_commands: dict[str, LazyCommand], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.lazy_commands)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Every argument must be text: a path of other bytes (Latin-1's `é`) crashed each command that records
        its command line, and would go into results and stores that are written as UTF-8."""
        for arg in args:
            try:
                arg.encode()
            except UnicodeEncodeError:
                raise click.UsageError(
                    f"the argument {os.fsencode(arg)!r} is not UTF-8 text; rename the file or folder it names"
                ) from None
        return super().parse_args(ctx, args)

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        """Ctrl-C or SIGTERM while the arguments are read (an interrupt held back during an import lands here) ends
        as one during the command does, not with click's "Aborted!" and status 1."""
        try:
            return super().make_context(info_name, args, parent, **extra)
        except KeyboardInterrupt as interrupt:
            raise _interrupted(interrupt) from None

    def invoke(self, ctx: click.Context) -> Any:
        """Ctrl-C or SIGTERM before a command handles it (while torch, the model or a store load) ends as the
        command's own interruption does, with the shell's status 130 or 143 that job scripts read as stopped, not
        click's 1."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as interrupt:
            raise _interrupted(interrupt) from None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy_commands:
            return None
        module, attribute = self.lazy_commands[cmd_name].location.split(":")
        return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        click.Group(commands=self._stand_ins()).format_commands(ctx, formatter)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        """Subcommand names from the table too, so that completing `isegprobe tr<TAB>` imports nothing."""
        names = [
            CompletionItem(command.name, help=command.get_short_help_str())
            for command in self._stand_ins()
            if command.name.startswith(incomplete)
        ]
        return names + click.Command.shell_complete(self, ctx, incomplete)

    def _stand_ins(self) -> list[click.Command]:
        """Empty commands with the real ones' names and summaries: click lays them out as it would the real ones."""
        return [click.Command(name, help=entry.summary) for name, entry in self.lazy_commands.items()]


def _interrupted(interrupt: KeyboardInterrupt) -> click.exceptions.Exit:
    click.echo(how_stopped(interrupt), err=True)
    return click.exceptions.Exit(exit_status(interrupt))


_python_format_warning = warnings.formatwarning


def format_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """Our own warnings speak to the command's user: the message alone, not the library line that raised it.
    Other packages' warnings keep Python's format, whose file and line help report them upstream."""
    if category.__module__.split(".")[0] == "isegprobe":
        return f"warning: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


class NotesToStderr(logging.Handler):
    """The library's log records as the command's own lines on stderr: its INFO records say what it decided for the
    user (whether `data.preload: auto` reads the store into memory, the step a resumed run starts at), its WARNING
    ones begin with "warning:", as its warnings do. Under torchrun only rank 0 prints the INFO ones, which every
    rank decides alike; RANK is read here as it stands, since `torchrun_env.current_rank` refuses a malformed one,
    which the command itself reports. The stream is looked up at each record, since one process may run several
    commands."""

    def __init__(self) -> None:
        super().__init__(logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        click.echo(f"warning: {message}" if record.levelno >= logging.WARNING else message, err=True)


def show_library_notes() -> None:
    """Route the `isegprobe` loggers' records to `NotesToStderr`, once per process."""
    logger = logging.getLogger("isegprobe")
    if not any(isinstance(handler, NotesToStderr) for handler in logger.handlers):
        logger.addHandler(NotesToStderr())
        logger.setLevel(logging.INFO)


@click.group(
    cls=LazyGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)
@click.version_option(__version__, prog_name="isegprobe")
def main() -> None:
    """Probe frozen vision foundation models and feature upsamplers with interactive segmentation.

    \b
    Stage one runs the frozen featurizer once per dataset and caches its features:
        isegprobe extract-features --featurizer vit_small_patch14_dinov2 --weights hub \\
            --dataset grabcut --root data/GrabCut --size 448 --out cache/
    Stage two trains and evaluates probes from that cache.
    Try `isegprobe quickstart` for the whole pipeline on the built-in data, in about a minute even on a CPU.
    """
    warnings.formatwarning = format_warning
    show_library_notes()
    threading.excepthook = quiet_disk_errors_in_threads
