"""The command group: subcommands load on first use, and `isegprobe --help` lists them as click would eagerly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import click
import pytest
from click.testing import CliRunner
from stores import builtin_store

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


def test_no_command_help_or_mistyped_option_loads_the_libraries_the_commands_run() -> None:
    """Every command's and subcommand's --help, and a mistyped option, come back in a fraction of a second: torch,
    tensorstore, zarr, matplotlib, safetensors and timm (3 to 7 s together on two cores) load once a command runs,
    not to print its options (isegprobe/commands/__init__.py). Each is checked right after it ran, in one process."""
    probe = (
        "import sys, click\n"
        "from isegprobe.cli import COMMANDS, main\n"
        "HEAVY = ('torch', 'tensorstore', 'zarr', 'matplotlib', 'safetensors', 'timm', 'torchvision')\n"
        "def paths(command, path):\n"
        "    yield path\n"
        "    if isinstance(command, click.Group):\n"
        "        for name in command.list_commands(click.Context(command)):\n"
        "            yield from paths(command.get_command(click.Context(command), name), [*path, name])\n"
        "runs = [[*path, '--help'] for name in COMMANDS\n"
        "        for path in paths(main.get_command(click.Context(main), name), [name])]\n"
        "runs += [['train', '--no-such-option'], ['evaluate', '--max-clicks', '0']]\n"
        "for argv in runs:\n"
        "    try:\n"
        "        main(argv, prog_name='isegprobe')\n"
        "    except SystemExit as stop:\n"
        "        loaded = sorted(m for m in HEAVY if m in sys.modules)\n"
        "        print('ran', ' '.join(argv), 'exit', stop.code, loaded)\n"
    )
    finished = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    lines = [line for line in finished.stdout.splitlines() if line.startswith("ran ")]
    assert len(lines) > len(COMMANDS) + 2 + 8, finished.stdout + finished.stderr[-3000:]  # subcommands too
    for line in lines:
        status = 0 if "--help" in line else 2
        assert line.endswith(f"exit {status} []"), finished.stdout + finished.stderr[-3000:]


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


@pytest.mark.parametrize("rank", ["0", "1"])
def test_the_librarys_notes_print_as_lines_and_only_rank_0_says_what_it_decided(rank: str) -> None:
    """What the library logs (data.preload auto's decision, a resumed run's step) reaches a command's user: INFO
    records as plain lines from rank 0, WARNING ones as `warning: ...` from every rank, once each however many
    commands the process runs."""
    probe = (
        "import logging\n"
        "from isegprobe.cli import main\n"
        "for _ in range(2):\n"
        "    try:\n"
        "        main(['datasets', 'list'], prog_name='isegprobe')\n"
        "    except SystemExit:\n"
        "        pass\n"
        "logging.getLogger('isegprobe.training.loaders').info('data.preload auto: read into memory')\n"
        "logging.getLogger('isegprobe.cache.preload').warning('kept in host memory')\n"
        "logging.getLogger('isegprobe.training.loaders').debug('a detail')\n"
    )
    environment = {**os.environ, "RANK": rank}
    finished = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=environment
    )
    lines = finished.stderr.splitlines()
    assert lines.count("warning: kept in host memory") == 1, finished.stderr
    assert lines.count("data.preload auto: read into memory") == (1 if rank == "0" else 0), finished.stderr
    assert "a detail" not in finished.stderr


def test_a_renamed_option_takes_its_old_name_with_a_warning_and_help_shows_only_the_new() -> None:
    from isegprobe.commands.options import renamed_option

    @click.command()
    @renamed_option("--store", "store_path", ["--cache"], required=True, help="A store.")
    def show(store_path: str) -> None:
        click.echo(f"store {store_path}")

    runner = CliRunner()
    new = runner.invoke(show, ["--store", "a"])
    assert new.exit_code == 0 and new.stdout == "store a\n" and new.stderr == ""
    old = runner.invoke(show, ["--cache", "a"])
    assert old.exit_code == 0 and old.stdout == "store a\n"
    assert old.stderr == "warning: --cache is deprecated; use --store\n"
    both = runner.invoke(show, ["--store", "a", "--cache", "b"])
    assert both.exit_code == 2 and "--cache is the former name of --store: give one of them" in both.stderr
    missing = runner.invoke(show, [])
    assert missing.exit_code == 2 and "Missing option '--store'." in missing.stderr
    help_text = runner.invoke(show, ["--help"]).stdout
    assert "--store" in help_text and "[required]" in help_text and "--cache" not in help_text


def test_the_old_store_option_of_train_still_reaches_the_command(tmp_path) -> None:
    """`train --cache` (the name before --store): warned about, and its value is the training store."""
    not_a_store = tmp_path / "folder"
    not_a_store.mkdir()
    arguments = ["train", "--cache", str(not_a_store), "--config", "fast_cpu", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(main, [*arguments, "--device", "cpu"])
    assert result.exit_code == 1
    assert result.stderr.startswith("warning: --cache is deprecated; use --store\n")
    assert str(not_a_store) in result.stderr


EMPTY_PATHS = [  # a command, an empty path given to one of its options, and what else it needs to get that far
    ["train", "--config", "quickstart", "--store", "STORE", "--out", ""],
    ["evaluate", "--checkpoint", "RUN", "--store", "STORE", "--out", ""],
    ["extract-features", "--featurizer", "vit_small_patch14_dinov2", "--weights", "", "--dataset", "builtin",
     "--out", "cache"],
    ["extract-features", "--featurizer", "vit_small_patch14_dinov2", "--weights", "random", "--dataset", "builtin",
     "--root", "", "--out", "cache"],
    ["quickstart", "--out", ""],
    ["report", "RESULTS", "--out", ""],
    ["plot", "iou-vs-clicks", "RESULTS", "--out", ""],
]  # fmt: skip


@pytest.mark.parametrize("arguments", EMPTY_PATHS, ids=lambda given: f"{given[0]} {given[given.index('') - 1]}")
def test_an_empty_path_is_a_usage_error_before_any_work(arguments: list[str], tmp_path, monkeypatch) -> None:
    """An empty path is the current folder to Python: `train --out "$RUN"` with RUN unset trained into the folder
    the command ran in, and `--weights ""` took the hub's weights as if the option were not given."""
    monkeypatch.chdir(tmp_path)
    for placeholder in ("STORE", "RUN", "RESULTS"):
        (tmp_path / placeholder).mkdir()
    option = arguments[arguments.index("") - 1]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}': an empty path (an unset shell variable?)" in result.output
    assert sorted(path.name for path in tmp_path.iterdir()) == ["RESULTS", "RUN", "STORE"]


STORE_OPTIONS = {  # command -> (options that take one store, options that take a folder of stores)
    ("train",): (["--store", "--val-store"], []),
    ("evaluate",): (["--store"], ["--store-root"]),
    ("plot", "features"): (["--store"], []),
    ("import-seed",): (["--store"], []),
}


@pytest.mark.parametrize("path", list(STORE_OPTIONS), ids=" ".join)
def test_stores_are_named_the_same_way_in_every_command(path: tuple[str, ...]) -> None:
    command = main
    for name in path:
        command = command.get_command(click.Context(command), name)
    shown = {option for param in command.params if not getattr(param, "hidden", False) for option in param.opts}
    one, folder = STORE_OPTIONS[path]
    assert set(one + folder) <= shown
    assert not {option for option in shown if "cache" in option}, "a store is --store, a folder of them --store-root"


DEVICE_COMMANDS = [("extract-features",), ("train",), ("evaluate",), ("plot", "features"), ("plot", "predictions"),
                   ("demo",), ("quickstart",)]  # fmt: skip


@pytest.mark.parametrize("path", DEVICE_COMMANDS, ids=" ".join)
def test_every_command_that_computes_picks_its_device_by_one_rule(path: tuple[str, ...], monkeypatch) -> None:
    import torch

    from isegprobe.commands import options
    from isegprobe.commands.options import DEVICE_RULE

    command = main
    for name in path:
        command = command.get_command(click.Context(command), name)
    (device,) = [param for param in command.params if param.name == "device"]
    assert device.default is None and DEVICE_RULE in device.help
    assert device.callback is options._device, "the shared --device of commands/options.py"

    context = click.Context(command)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device.process_value(context, None) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert device.process_value(context, None) == "cuda"
    assert device.process_value(context, "cpu") == "cpu"


def test_a_gpu_asked_for_where_there_is_none_is_refused_before_any_work(monkeypatch) -> None:
    import torch

    from isegprobe.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(main, ["plot", "features", "--store", ".", "--device", "cuda"])
    assert result.exit_code == 2 and "--device cuda: no CUDA device is available here" in result.stderr
    with pytest.raises(Exception, match="expected cpu, cuda or cuda:N"):
        resolve_device("tpu")


def test_train_picks_its_preset_by_the_resolved_device_and_says_so_in_help() -> None:
    from isegprobe.commands import train as train_command

    assert train_command._default_preset("cuda") == "sbd_224"
    assert train_command._default_preset("cuda:1") == "sbd_224"
    assert train_command._default_preset("cpu") == "fast_cpu"
    help_text = " ".join(CliRunner().invoke(main, ["train", "--help"], terminal_width=200).stdout.split())
    assert "Without it the preset is picked by the device (see --device): sbd_224 (the research recipe) on CUDA, " \
        "fast_cpu (a light head) on CPU" in help_text  # fmt: skip


def test_train_help_says_whose_weights_the_online_featurizer_takes_by_default() -> None:
    """--featurizer said "(default: the store's)" and --weights nothing, though without it an --online run or an
    early-fusion probe takes the store's weights, not hub or random."""
    help_text = " ".join(CliRunner().invoke(main, ["train", "--help"], terminal_width=200).stdout.split())
    assert (
        "Featurizer weights for --online or an early-fusion probe: random, hub or a file (default: the store's)."
        in (help_text)
    )


def test_ctrl_c_while_a_command_loads_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before a command takes over SIGINT (torch and its model still loading), click said "Aborted!" and exited 1,
    which job scripts read as a failure, not as an interruption."""
    import isegprobe.cli

    def interrupted(name: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(isegprobe.cli.importlib, "import_module", interrupted)
    result = CliRunner().invoke(main, ["report", "somewhere"])
    assert result.exit_code == 130 and "interrupted" in result.stderr and "Aborted!" not in result.output


def test_an_interrupt_during_an_import_is_raised_once_the_import_is_done(tmp_path) -> None:
    """A KeyboardInterrupt raised inside an extension's initialisation came out as `ImportError: initialization
    failed` (tensorstore's ml_dtypes), a RecursionError or a C++ abort. The module here interrupts its own import;
    the interrupt must reach the importer after the import finished, as a KeyboardInterrupt."""
    (tmp_path / "interrupts_itself.py").write_text(
        "import os, signal, time\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "started = time.perf_counter()\n"
        "while time.perf_counter() - started < 0.3:\n"
        "    pass\n"
        "finished = True\n"
    )
    program = (
        "import sys, time\n"
        "from isegprobe.interrupts import interrupt_between_imports\n"
        "interrupt_between_imports()\n"
        "try:\n"
        "    import interrupts_itself\n"
        "    time.sleep(5)\n"
        "    print('never interrupted')\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted after the import:', sys.modules['interrupts_itself'].finished)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.strip() == "interrupted after the import: True", result.stderr


def test_ctrl_c_at_any_moment_of_a_commands_start_exits_130_without_a_traceback(tmp_path) -> None:
    """Ctrl-C in the first seconds of `cache inspect` (torch, zarr and tensorstore loading) ended in 12 of 22 tries
    with a traceback and status 1, or with SIGINT's own -2 and a traceback. A command whose work was done before the
    interrupt could land may end with 0, or with -2 as the interpreter ends; never with a traceback. The delays count
    from the moment the entry point has its handler (the import of isegprobe.interrupts, as `-X importtime` says):
    before it, Python's own start-up is Python's to interrupt."""
    store = builtin_store(tmp_path, size=28, views="identity")
    endings = []
    for delay in (0.05, 0.4, 0.9, 1.5):
        log = tmp_path / f"stderr_{delay}.txt"
        with log.open("w") as stderr:
            command = subprocess.Popen(
                [sys.executable, "-X", "importtime", "-m", "isegprobe", "cache", "inspect", str(store)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
            waited = time.monotonic() + 60
            while "isegprobe.interrupts" not in log.read_text() and time.monotonic() < waited:
                time.sleep(0.005)
            assert "isegprobe.interrupts" in log.read_text(), "the entry point imports its interrupt handler first"
            time.sleep(delay)
            command.send_signal(signal.SIGINT)
            command.wait(timeout=120)
        lines = [line for line in log.read_text().splitlines() if line.strip() and not line.startswith("import time:")]
        endings.append((delay, command.returncode, lines[-1:]))
    assert all(code in (0, 130, -signal.SIGINT) and lines in ([], ["interrupted"]) for _, code, lines in endings), (
        endings
    )
    assert any(code == 130 for _, code, _ in endings), endings
