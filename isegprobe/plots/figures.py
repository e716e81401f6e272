"""Figures without pyplot: no GUI backend and no global figure state, so plotting works on a headless server and
inside long-running processes alike."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from isegprobe.training.checkpoint import write_output_file


def new_figure(panels: int, panel_size: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    """A figure with `panels` axes side by side, each `panel_size` inches."""
    width, height = panel_size
    figure = Figure(figsize=(width * panels, height), layout="constrained")
    return figure, list(figure.subplots(1, panels, squeeze=False)[0])


def save_figure(figure: Figure, out: Path, formats: Sequence[str] = ("png",), dpi: int = 150) -> list[Path]:
    """Write the figure once per format (`out` with that suffix), each file atomically; returns the paths."""
    written = []
    for extension in formats:
        path = out.with_suffix(f".{extension}")
        buffer = io.BytesIO()
        with matplotlib.rc_context({"svg.fonttype": "none"}):
            figure.savefig(buffer, format=extension, dpi=dpi)
        write_output_file(path, buffer.getvalue())
        written.append(path)
    return written
