"""Seconds until a command's --help (or a mistyped option's error) is on the screen: this tree against another.

A researcher reads `isegprobe train --help` many times; a command module that imports torch, zarr, tensorstore and
matplotlib at its top made each take 3 to 7 s on two cores. Each tree runs every command in its own fresh process
(`python -m isegprobe ...`, the tree on PYTHONPATH), alternating between the trees, and the medians are compared.

    python benchmarks/cli_start.py --baseline-tree /path/to/worktree-of-f2320f9
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, RESULTS, Check, interleave, median, report, table

from isegprobe.cli import COMMANDS

# Subcommands of the groups whose options need libraries of their own, and a mistyped option (click's usage error).
EXTRA = (("cache", "verify", "--help"), ("plot", "features", "--help"), ("train", "--no-such-option"))
# A command's --help should come back within this many seconds on two cores.
TARGET_SECONDS = 1.0
# The runs start in the tree, where a relative path to the interpreter means nothing.
PYTHON = os.path.abspath(sys.executable)


def tree_environment(tree: Path) -> dict[str, str]:
    """The environment whose `python -m isegprobe`, started in `tree` (`-m` puts the working folder first of all),
    imports that tree's package: checked once per tree, since the package found depends on the tree alone."""
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    where = subprocess.run(
        [PYTHON, "-c", "import isegprobe; print(isegprobe.__file__)"],
        env=environment,
        cwd=tree,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not where or Path(where).resolve().parents[1] != tree:
        sys.exit(f"a process started in {tree} imported isegprobe from {where or 'nowhere'}")
    return environment


def seconds(tree: Path, environment: dict[str, str], argv: tuple[str, ...]) -> float:
    """Wall seconds of one fresh `python -m isegprobe ARGV` in `tree`, with its `tree_environment`."""
    start = time.perf_counter()
    done = subprocess.run([PYTHON, "-m", "isegprobe", *argv], env=environment, cwd=tree, capture_output=True)
    elapsed = time.perf_counter() - start
    expected = 0 if argv[-1] == "--help" else 2  # click's status for a usage error
    if done.returncode != expected:
        sys.exit(f"{' '.join(argv)} in {tree} exited {done.returncode}, not {expected}: {done.stderr.decode()[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.strip().splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--baseline-tree", type=Path, help="a checkout of the tree to compare with")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per command and tree (medians)")
    parser.add_argument("--json", type=Path, default=RESULTS / "cli_start.json", help="where to write the results")
    parser.add_argument("--commands", help="comma-separated commands to time (default: every one, and a few more)")
    args = parser.parse_args()
    trees = {"this tree": REPO}
    if args.baseline_tree is not None:
        if not (args.baseline_tree / "isegprobe" / "cli.py").is_file():
            sys.exit(f"--baseline-tree {args.baseline_tree}: not a checkout of isegprobe")
        trees["baseline"] = args.baseline_tree.resolve()
    commands = [(name, "--help") for name in sorted(COMMANDS)] + list(EXTRA)
    if args.commands is not None:
        commands = [(name, "--help") for name in args.commands.split(",")]
    environments = {name: tree_environment(tree) for name, tree in trees.items()}
    rows, results, checks = [], {}, []
    for argv in commands:
        timers = {
            name: lambda _, tree=tree, argv=argv, environment=environments[name]: seconds(tree, environment, argv)
            for name, tree in trees.items()
        }
        runs = interleave(timers, args.repeats)
        medians = {name: median(times) for name, times in runs.items()}
        label = " ".join(argv)
        results[label] = medians
        row = [label, *(medians[name] for name in trees)]
        if "baseline" in medians:
            row.append(medians["baseline"] / medians["this tree"])
        rows.append(row)
        if argv[-1] == "--help":
            checks.append(Check(f"{label}, seconds", medians["this tree"], TARGET_SECONDS, at_least=False))
    headers = ["command", *(f"{name}, s" for name in trees)] + (["baseline / this tree"] if len(trees) > 1 else [])
    sections = {f"median wall seconds of {args.repeats} fresh processes per tree, alternating": table(headers, rows)}
    report("cli_start", args, sections, checks, results)


if __name__ == "__main__":
    main()
