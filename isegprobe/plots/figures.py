"""Figures without pyplot: no GUI backend and no global figure state, so plotting works on a headless server and
inside long-running processes alike."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from isegprobe.atomic_files import write_output_file
from isegprobe.errors import UserError
from isegprobe.output_files import output_file


def new_figure(panels: int, panel_size: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    """A figure with `panels` axes side by side, each `panel_size` inches."""
    width, height = panel_size
    figure = Figure(figsize=(width * panels, height), layout="constrained")
    return figure, list(figure.subplots(1, panels, squeeze=False)[0])


def figure_paths(out: str | Path, formats: Sequence[str], option: str = "--out") -> list[Path]:
    """The files a figure saved to `out` is written to, one per format: `out` with that format's suffix. `out` may
    end in one of those suffixes (in any case, kept as given) or in none (`fig` and `fig.png` both write fig.png);
    any other suffix is refused, since replacing it would write a file of another name than the one given
    (`plot.final.v2` as plot.final.png), and so is a name that ends in a dot or is a suffix alone (`fig.`, `.png`
    wrote fig..png and .png.png). Each path is checked as `out` is, so that no format is written before another's
    path is refused."""
    path = output_file(out, option)
    suffixes = [f".{extension}" for extension in formats]
    if path.name.endswith(".") or (not path.suffix and path.name.lower() in suffixes):
        raise UserError(f"{option} {out}: a name that ends in a dot or is a suffix alone; give one as fig{suffixes[0]}")
    if path.suffix and path.suffix.lower() not in suffixes:
        written = " and ".join(f"{path.name}{suffix}" for suffix in suffixes)
        raise UserError(
            f"{option} {out}: a figure path ends in {' or '.join(suffixes)}, or in no suffix, not {path.suffix} "
            f"(`{option} {out}{suffixes[0]}` writes {written})"
        )
    spelled = {suffix: path.suffix if path.suffix.lower() == suffix else suffix for suffix in suffixes}
    return [output_file(path.with_suffix(spelled[suffix]), option) for suffix in suffixes]


def save_figure(figure: Figure, out: str | Path, formats: Sequence[str] = ("png",), dpi: int = 150) -> list[Path]:
    """Write the figure once per format (`figure_paths`), each file atomically; returns the paths."""
    written = []
    for extension, path in zip(formats, figure_paths(out, formats), strict=True):
        buffer = io.BytesIO()
        with matplotlib.rc_context({"svg.fonttype": "none"}):
            figure.savefig(buffer, format=extension, dpi=dpi)
        write_output_file(path, buffer.getvalue())
        written.append(path)
    return written
