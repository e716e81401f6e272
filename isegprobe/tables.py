"""Plain-text tables for the terminal that paste into Markdown documents as they are."""

from __future__ import annotations


def markdown_table(rows: list[list[str]], text_columns: int = 1) -> str:
    """Rows (the first is the header) as an aligned Markdown table: the first `text_columns` left, the numbers
    after them right. A `|` in a cell (a label, a dataset or folder name) is escaped, since it would end the cell."""
    rows = [[cell.replace("|", "\\|") for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(cells: list[str]) -> str:
        padded = [
            cell.ljust(width) if index < text_columns else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rules = [
        "-" * (width + 2) if index < text_columns else "-" * (width + 1) + ":" for index, width in enumerate(widths)
    ]
    return "\n".join([line(rows[0]), "|" + "|".join(rules) + "|", *(line(row) for row in rows[1:])])
