"""The command group: subcommands load on first use, and `isegprobe --help` lists them as click would eagerly."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from isegprobe.cli import COMMANDS, main


def eager_group() -> click.Group:
    """The same group with every subcommand imported up front: what the lazy listing must look like."""
    group = click.Group(
        "main", help=main.help, context_settings=main.context_settings, params=list(main.params), commands=[]
    )
    for name in COMMANDS:
        group.add_command(main.get_command(click.Context(main), name), name)
    return group


@pytest.mark.parametrize("width", [60, 80, 200])
def test_the_lazy_command_list_reads_exactly_as_the_commands_own_help(width: int) -> None:
    runner = CliRunner()
    lazy = runner.invoke(main, ["--help"], terminal_width=width)
    eager = runner.invoke(eager_group(), ["--help"], terminal_width=width)
    assert lazy.exit_code == 0 and eager.exit_code == 0
    assert lazy.output == eager.output


def test_every_entry_names_its_command() -> None:
    for name in COMMANDS:
        command = main.get_command(click.Context(main), name)
        assert isinstance(command, click.Command) and command.name == name


def test_help_and_an_unknown_command_start_without_torch() -> None:
    probe = (
        "import sys\n"
        "from isegprobe.cli import main\n"
        "for argv in (['--help'], ['no-such-command']):\n"
        "    try:\n"
        "        main(argv, prog_name='isegprobe')\n"
        "    except SystemExit as stop:\n"
        "        print('exit', stop.code)\n"
        "print('heavy imports:', sorted(m for m in ('torch', 'timm', 'zarr', 'cv2') if m in sys.modules))\n"
    )
    finished = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "exit 0\nexit 2\nheavy imports: []" in finished.stdout, finished.stdout + finished.stderr
    assert "No such command 'no-such-command'" in finished.stderr


def test_completing_a_subcommand_name_imports_no_subcommand() -> None:
    probe = (
        "import os, sys\n"
        "from isegprobe.cli import main\n"
        "os.environ.update(_ISEGPROBE_COMPLETE='bash_complete', COMP_WORDS='isegprobe tr', COMP_CWORD='1')\n"
        "try:\n"
        "    main([], prog_name='isegprobe')\n"
        "except SystemExit as stop:\n"
        "    print('exit', stop.code)\n"
        "print('loaded:', sorted(m for m in sys.modules if m.startswith('isegprobe.commands') or m == 'torch'))\n"
    )
    finished = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert finished.stdout.splitlines() == ["plain,train", "exit 0", "loaded: []"], finished.stdout + finished.stderr


def test_no_subcommand_help_loads_timm() -> None:
    """timm and torchvision (2 s) load when a featurizer is built, not to print a command's options."""
    probe = (
        "import sys\n"
        "from isegprobe.cli import COMMANDS, main\n"
        "for name in COMMANDS:\n"
        "    try:\n"
        "        main([name, '--help'], prog_name='isegprobe')\n"
        "    except SystemExit as stop:\n"
        "        assert stop.code == 0, name\n"
        "print('loaded:', sorted(m for m in ('timm', 'torchvision') if m in sys.modules))\n"
    )
    finished = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert "loaded: []" in finished.stdout, finished.stdout[-2000:] + finished.stderr[-2000:]


def test_our_warnings_print_as_one_line_and_others_keep_their_source() -> None:
    """A subcommand run shows `warning: ...` for the tool's own warnings; a third party's keeps file and line."""
    probe = (
        "import warnings\n"
        "from isegprobe.cli import main\n"
        "from isegprobe.featurizers import RandomWeightsWarning\n"
        "try:\n"
        "    main(['datasets', 'list'], prog_name='isegprobe')\n"
        "except SystemExit:\n"
        "    pass\n"
        "warnings.warn('meaningless numbers', RandomWeightsWarning)\n"
        "warnings.warn('from elsewhere', UserWarning)\n"
    )
    finished = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    lines = finished.stderr.splitlines()
    assert "warning: meaningless numbers" in lines, finished.stderr
    assert any(line.endswith("UserWarning: from elsewhere") and ":" in line.split("UserWarning")[0] for line in lines)
