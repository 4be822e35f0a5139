"""Image data files: a .tsv/.csv whose ``image`` column names each example's image file, relative to the table's
folder (models/data/shapes/dev.tsv). Images a row can be drawn from (a shapes ``scene`` column) are rendered
on first use when missing (data/shapes.py), so generated sets need no checked-in pictures.

texts.py builds the TextSet (``images``: the files; ``texts``: the same paths as str, what a runtime image
method takes); this module only resolves, renders and checks the files. Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from toolchain.runtime.errors import ToolchainError

IMAGE_COLUMNS = ("image",)


def _draw_scenes(table: Path, rows: list[dict[str, str]]) -> int:
    from toolchain.data import shapes  # imported on use: `python -m toolchain.data.shapes` runs it as __main__

    return shapes.materialize(table, rows)


# A column that says how to draw a row's image -> the function that draws the missing ones (table, rows).
RENDERERS: dict[str, Callable[[Path, list[dict[str, str]]], int]] = {
    "scene": _draw_scenes,
}


def image_column(columns: list[str]) -> str | None:
    """The table's image column, or None for a text table."""
    return next((c for c in IMAGE_COLUMNS if c in columns), None)


def image_paths(path: Path, rows: list[dict[str, str]], column: str, first_line: int = 2) -> list[Path]:
    """The image file of each row (drawn first where the row says how and the file is missing); an error
    naming the line for an empty cell or a file that is not there."""
    for key, render in RENDERERS.items():
        if rows and key in rows[0]:
            render(path, rows)
    root = path.parent
    out = []
    for line, row in enumerate(rows, first_line):
        value = (row.get(column) or "").strip()
        if not value:
            raise ToolchainError(f"{path} line {line}: the {column!r} column is empty; name an image file there.")
        image = Path(value).expanduser()
        image = image if image.is_absolute() else root / image
        if not image.is_file():
            raise ToolchainError(f"{path} line {line}: image {value!r} does not exist (paths are relative to "
                                 f"{root}); fix the path or add the file.")
        out.append(image)
    return out
