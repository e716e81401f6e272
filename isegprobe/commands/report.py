"""`isegprobe report`: the papers' comparison table from several evaluations."""

from __future__ import annotations

from pathlib import Path

import click

from isegprobe.atomic_files import write_output_file
from isegprobe.commands.errors import reports_user_errors
from isegprobe.commands.options import labels_option, results_and_labels, results_argument
from isegprobe.locks import lock_holder
from isegprobe.output_files import text_output_file


@click.command("report")
@results_argument
@labels_option
@click.option(
    "--format",
    "table_format",
    type=click.Choice(["md", "csv"]),
    default="md",
    show_default=True,
    help="md: Markdown, best value per column in bold, notes below; csv: plain numbers for a spreadsheet, a "
    "'complete' column per dataset (yes, no, running), the notes on stderr.",
)
@click.option("--miou-at", default=5, show_default=True, type=click.IntRange(min=1), help="Clicks for the mIoU column.")
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the table to this file.")
@reports_user_errors
def report(results: tuple[str, ...], labels: str | None, table_format: str, miou_at: int, out: str | None) -> None:
    """One row per evaluation (RESULTS: folders written by `isegprobe evaluate --out`), and per dataset the NoC@85,
    NoC@90 and mIoU after --miou-at clicks, as the papers' tables compare probes.

    Cells of a dataset an evaluation has not finished are marked: as in progress while its `isegprobe evaluate`
    still runs (it holds the folder's lock), as stopped once it does not.
    """
    from isegprobe.inference.report import format_report, report_notes
    from isegprobe.inference.result_labels import refuse_repeated_labels
    from isegprobe.inference.results import refuse_to_replace_results

    if out is not None:
        refuse_to_replace_results(out, results)
        text_output_file(out)
    evaluations = results_and_labels(results, labels)
    if labels is not None:
        refuse_repeated_labels([label for label, _ in evaluations])
    running = {
        index: holder for index, folder in enumerate(results) if (holder := lock_holder(Path(folder))) is not None
    }
    table = format_report(evaluations, miou_at, table_format, running)
    click.echo(table)
    if table_format == "csv":  # the Markdown table has them below it; a spreadsheet's file must not
        for note in report_notes(evaluations, miou_at, running):
            click.echo(note, err=True)
    if out is not None:
        write_output_file(out, (table + "\n").encode())
