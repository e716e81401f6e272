"""The `isegprobe` command: one click group, one module per subcommand under `isegprobe/commands/`."""

from __future__ import annotations

import click

from isegprobe import __version__
from isegprobe.commands.cache import cache
from isegprobe.commands.datasets import datasets
from isegprobe.commands.demo import demo
from isegprobe.commands.evaluate import evaluate
from isegprobe.commands.extract import extract_features
from isegprobe.commands.import_seed import import_seed
from isegprobe.commands.plot import plot
from isegprobe.commands.quickstart import quickstart
from isegprobe.commands.report import report
from isegprobe.commands.train import train


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="isegprobe")
def main() -> None:
    """Probe frozen vision foundation models and feature upsamplers with interactive segmentation.

    \b
    Stage one runs the frozen backbone once per dataset and caches its features:
        isegprobe extract-features --featurizer vit_small_patch14_dinov2 --weights hub \\
            --dataset grabcut --root data/GrabCut --size 448 --out cache/
    Stage two trains and evaluates probes from that cache.
    Try `isegprobe quickstart` for the whole pipeline on the built-in data, on CPU, in a few minutes.
    """


main.add_command(cache)
main.add_command(datasets)
main.add_command(demo)
main.add_command(evaluate)
main.add_command(extract_features)
main.add_command(import_seed)
main.add_command(plot)
main.add_command(quickstart)
main.add_command(report)
main.add_command(train)
