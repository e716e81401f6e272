"""`isegprobe cache`: look into a feature store and check it."""

from __future__ import annotations

import click

from cache_tools import describe_store, verify_store
from isegprobe.commands.errors import reports_user_errors


@click.group("cache")
def cache() -> None:
    """Inspect and verify feature stores written by extract-features."""


@cache.command("inspect")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@reports_user_errors
def inspect_command(store: str) -> None:
    """What a store holds: featurizer provenance, dataset, preprocessing, progress, arrays and chunking."""
    click.echo(describe_store(store))


@cache.command("verify")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@reports_user_errors
def verify_command(store: str) -> None:
    """Read every finished item and check it; exits 1 and lists the problems if any."""
    problems = verify_store(store)
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        raise SystemExit(1)
    click.echo(f"{store}: consistent")
