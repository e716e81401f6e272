"""`isegprobe datasets list | check | download`: where the data are, whether they are sound, and getting them."""

from __future__ import annotations

from pathlib import Path

import click

from isegprobe.commands.errors import reports_user_errors
from isegprobe.commands.limits import max_pixels_option
from isegprobe.data import create_dataset, list_datasets
from isegprobe.data.catalog import BUILTIN, CATALOG, dataset_facts, has_layout
from isegprobe.data.check import ON_ERROR_CHOICES, CheckReport, check_source
from isegprobe.data.download import ARCHIVES, download_dataset
from isegprobe.data.roots import dataset_root, load_dataset_config, resolve_root, root_origin_told
from isegprobe.home_paths import expand_home
from isegprobe.locks import exclusive_lock
from isegprobe.output_files import folders_removed_if_left_empty

MAX_LISTED_WARNINGS = 20


@click.group("datasets")
def datasets() -> None:
    """List, check and download the datasets the probe reads.

    Dataset folders come from the file $ISEGPROBE_DATASETS names, else ~/.config/isegprobe/datasets.yaml
    ($XDG_CONFIG_HOME); a dataset the file does not name is looked for in data/<folder> here. --root wins.

    \b
        isegprobe datasets list
        isegprobe datasets check grabcut --root data/GrabCut
        isegprobe datasets download grabcut --to data
    """


def _root_status(name: str, root: str | None) -> str:
    if name == BUILTIN:
        return "built in"
    if root is None:
        return "not set"
    path = expand_home(root)
    if has_layout(name, path):
        return "found"
    return "layout not found" if path.exists() else "missing"


@datasets.command("list")
@reports_user_errors
def list_command() -> None:
    """Every dataset family: published size, configured root, and whether it is there."""
    config = load_dataset_config()
    click.echo(f"roots from {config.roots_source}")
    rows = [("name", "splits (evaluated)", "published", "root", "from", "status")]
    for name in list_datasets():
        facts = CATALOG.get(name)
        root = config.root(name)
        splits = f"{', '.join(facts.splits) or 'any'} ({facts.eval_split})" if facts else "-"
        published = facts.published_text(facts.eval_split) if facts else "-"
        origin = "-" if name == BUILTIN else config.root_origin(name)
        rows.append((name, splits, published, root or "-", origin, _root_status(name, root)))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    click.echo(f"downloadable: {', '.join(sorted(ARCHIVES))} (isegprobe datasets download NAME --to DIR)")


def _print_report(report: CheckReport) -> None:
    counts = f"{report.images} images / {report.instances} instances ({report.items} items)"
    click.echo(f"{report.name}/{report.split} at {report.root}: {counts}")
    if report.published is not None:
        images, instances = report.published
        verdict = "matches" if (images, instances) == (report.images, report.instances) else "differs"
        click.echo(f"published: {images} images / {instances} instances ({verdict})")
    for finding in report.warnings[:MAX_LISTED_WARNINGS]:
        click.echo(f"warning: {finding.item}: {finding.message}")
    if len(report.warnings) > MAX_LISTED_WARNINGS:
        click.echo(f"warning: ... and {len(report.warnings) - MAX_LISTED_WARNINGS} more items without objects")
    for finding in report.problems:
        click.echo(f"problem: {finding.message}", err=True)


@datasets.command("check")
@click.argument("name")
@click.option("--root", default=None, help="Folder of the dataset; default: its configured root (see `datasets list`).")
@click.option(
    "--split",
    default=None,
    help="Split to read; append -instances for one sample per object (val-instances). Default: the evaluation split.",
)
@click.option(
    "--on-error",
    type=click.Choice(ON_ERROR_CHOICES),
    default="stop",
    show_default=True,
    help="stop at the first bad file, or skip it, read on and list them all.",
)
@max_pixels_option
@click.pass_context
@reports_user_errors
def check_command(context: click.Context, name: str, root: str | None, split: str | None, on_error: str) -> None:
    """Read every image and mask of dataset NAME: count images and instances, report bad files and size mismatches.

    Exits with status 1 when any item is bad.
    """
    facts = dataset_facts(name)  # an unknown name is refused before its root is looked for
    split = facts.eval_split if split is None else split
    with root_origin_told(name, root):
        source = create_dataset(name, dataset_root(name, root), split)
    report = check_source(source, on_error)
    _print_report(report)
    if report.problems:
        click.echo(f"{len(report.problems)} bad items skipped", err=True)
        context.exit(1)


@datasets.command("download")
@click.argument("name")
@click.option(
    "--to",
    "to",
    required=True,
    type=click.Path(file_okay=False),
    help="Parent folder; the dataset lands in DIR/<its folder name>.",
)
@click.option(
    "--url",
    default=None,
    help="Another address of the same archive (a mirror), or the path of a copy fetched on another machine.",
)
@click.option("--sha256", default=None, help="Expected SHA-256 of the archive; the download fails if it differs.")
@click.option(
    "--keep-archive",
    is_flag=True,
    help="Keep the downloaded archive after unpacking (an archive that was in --to before is always kept).",
)
@reports_user_errors
def download_command(name: str, to: str, url: str | None, sha256: str | None, keep_archive: bool) -> None:
    """Download dataset NAME's public archive (resumable, checked) and unpack it into the layout its loader reads."""
    target = Path(to) / dataset_facts(name).folder
    # One download into a folder at a time: two shared the archive's .part file and the unpacking folder.
    with folders_removed_if_left_empty([Path(to)]), exclusive_lock(target):
        root = download_dataset(name, Path(to), url=url, sha256=sha256, keep_archive=keep_archive, echo=click.echo)
    click.echo(f"{name} is in {root}")
    configured = resolve_root(name, None)
    if configured is None or configured.resolve() != root.resolve():
        settings = load_dataset_config().path  # read from any folder: the root it names must not be relative
        click.echo(f"use it with --root {root}, or set roots.{name.lower()}: {root.resolve()} in {settings}")
