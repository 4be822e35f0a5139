"""Reading evaluation and calibration text: a .txt file (one text per line) or a .tsv/.csv with a header.

Torch-free. The bundled default is the SST-2 dev split copied under models/data/.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from .runtime.errors import ToolchainError

TEXT_COLUMNS = ("sentence", "content", "text")
LABEL_COLUMNS = ("label",)
REPO_DATA = Path(__file__).resolve().parents[1] / "models" / "data"
DEFAULT_EVAL = REPO_DATA / "sst2" / "dev.tsv"


@dataclass
class TextSet:
    """Texts and, where the file has them, integer labels."""

    path: Path
    texts: list[str]
    labels: list[int] | None = None


def default_eval_path() -> Path:
    if not DEFAULT_EVAL.is_file():
        raise ToolchainError(f"the bundled evaluation set {DEFAULT_EVAL} is missing; pass --calib FILE (.txt or .tsv).")
    return DEFAULT_EVAL


def read_texts(path: str | Path | None = None, limit: int | None = None) -> TextSet:
    """Read texts (and labels when a 'label' column exists); ``None`` reads the bundled SST-2 dev split."""
    path = Path(path) if path is not None else default_eval_path()
    if not path.is_file():
        raise ToolchainError(f"data file {path} does not exist; pass a .txt (one text per line) or .tsv/.csv file.")
    try:
        if path.suffix in (".tsv", ".csv"):
            out = _read_table(path)
        else:
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            out = TextSet(path, [line for line in lines if line])
    except UnicodeDecodeError:
        raise ToolchainError(f"data file {path} is not UTF-8 text; convert it to UTF-8.") from None
    if not out.texts:
        raise ToolchainError(f"data file {path} holds no texts; give it at least one non-empty line.")
    if limit is not None:
        out.texts = out.texts[:limit]
        out.labels = out.labels[:limit] if out.labels is not None else None
    return out


def _read_table(path: Path) -> TextSet:
    delimiter = "\t" if path.suffix == ".tsv" else ","
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
        columns = reader.fieldnames or []
        text_col = next((c for c in TEXT_COLUMNS if c in columns), None)
        if text_col is None:
            raise ToolchainError(f"{path} has columns {columns}; it needs a text column named one of {list(TEXT_COLUMNS)}.")
        label_col = next((c for c in LABEL_COLUMNS if c in columns), None)
        texts, labels = [], []
        for i, row in enumerate(reader, start=2):
            text = (row.get(text_col) or "").strip()
            if not text:
                continue
            texts.append(text)
            if label_col:
                try:
                    labels.append(int(row[label_col]))
                except (TypeError, ValueError):
                    raise ToolchainError(f"{path} line {i}: label {row[label_col]!r} is not an integer class id.") from None
    return TextSet(path, texts, labels if label_col else None)
