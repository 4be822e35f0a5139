"""Reading translation pairs: a .tsv (or .csv) file with a header, one source and one target column.

Torch-free. The generated dates-and-amounts set (models/data/dates/, see toolchain.data.dates) has the
columns ``source``, ``iso`` and ``zh``; a recipe picks the target column.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from toolchain.runtime.checks import is_int
from toolchain.runtime.errors import ToolchainError


@dataclass
class PairSet:
    """Source texts and their targets, in file order (same length)."""

    path: Path
    sources: list[str]
    targets: list[str]


def read_pairs(path: str | Path, source: str = "source", target: str = "iso", limit: int | None = None) -> PairSet:
    """Read the ``source`` and ``target`` columns of a .tsv/.csv file with a header (at most ``limit`` rows).

    Every row must have both values; blank lines are skipped. A missing file, a missing column, an empty
    value or a file with no rows raises ToolchainError naming the fix.
    """
    if limit is not None and (not is_int(limit) or limit < 1):
        raise ToolchainError(f"limit must be a positive number of pairs, got {limit!r}.")
    path = Path(path)
    if not path.is_file():
        raise ToolchainError(f"pair file {path} does not exist; fix 'path' in the recipe or generate it "
                             f"(python -m toolchain.data.dates --out models/data/dates).")
    if path.suffix not in (".tsv", ".csv"):
        raise ToolchainError(f"pair file {path} is not a .tsv or .csv file; give a table with a header row.")
    try:
        out = _read_table(path, source, target, limit)
    except UnicodeDecodeError:
        raise ToolchainError(f"pair file {path} is not UTF-8 text; convert it to UTF-8.") from None
    if not out.sources:
        raise ToolchainError(f"pair file {path} has no rows; give it a header and at least one pair.")
    return out


def _read_table(path: Path, source: str, target: str, limit: int | None) -> PairSet:
    delimiter = "\t" if path.suffix == ".tsv" else ","
    with open(path, encoding="utf-8-sig", newline="") as fh:  # -sig: a BOM would hide the first column's name
        reader = csv.DictReader(fh, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
        columns = reader.fieldnames or []
        for role, want in (("source", source), ("target", target)):
            if want not in columns:
                listed = ", ".join(columns) if columns else "none (the file is empty)"
                raise ToolchainError(f"pair file {path} has no column {want!r}; its columns are {listed}; "
                                     f"set {role} = one of them in the recipe.")
        sources, targets = [], []
        for row in reader:
            if limit is not None and len(sources) >= limit:
                break
            src, tgt = (row.get(source) or "").strip(), (row.get(target) or "").strip()
            if not src or not tgt:
                empty = source if not src else target
                raise ToolchainError(f"pair file {path} line {reader.line_num}: column {empty!r} is empty; "
                                     f"give every row a source and a target.")
            sources.append(src)
            targets.append(tgt)
    return PairSet(path, sources, targets)
