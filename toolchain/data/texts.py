"""Reading evaluation and calibration text: a .txt file (one text per line) or a .tsv/.csv with a header; a
table with an ``image`` column is an image set (data/images.py: paths relative to the table's folder).

Torch-free. The bundled default is the SST-2 dev split, shipped in the package (toolchain/data/bundled/).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from toolchain.data.bundled import SST2_DEV
from toolchain.data.images import image_column, image_paths
from toolchain.runtime.checks import is_int
from toolchain.runtime.errors import ToolchainError

TEXT_COLUMNS = ("sentence", "content", "text", "source")
LABEL_COLUMNS = ("label",)
TARGET_COLUMNS = ("target",)  # text2text-generation: each text's reference output
DEFAULT_EVAL = SST2_DEV  # package data, so an installed toolchain finds it too (a copy of models/data/sst2/dev.tsv)


@dataclass
class TextSet:
    """Texts and, where the file has them, integer labels. An image set (a table with an ``image`` column) has
    ``images``, and ``texts`` holds the same paths as str: always what the task's runtime method takes."""

    path: Path
    texts: list[str]
    labels: list[int] | None = None
    targets: list[str] | None = None  # text2text-generation: the reference output of each text
    images: list[Path] | None = None  # image tasks: each example's image file


def default_eval_path() -> Path:
    if not DEFAULT_EVAL.is_file():
        raise ToolchainError(f"the bundled evaluation set {DEFAULT_EVAL} is missing; pass --calib FILE (.txt or .tsv).")
    return DEFAULT_EVAL


def read_texts(path: str | Path | None = None, limit: int | None = None) -> TextSet:
    """Read texts (and labels when a 'label' column exists); ``None`` reads the bundled SST-2 dev split."""
    if limit is not None and (not is_int(limit) or limit < 1):
        raise ToolchainError(f"limit must be a positive number of texts, got {limit!r}.")
    path = Path(path) if path is not None else default_eval_path()
    if not path.is_file():
        raise ToolchainError(f"data file {path} does not exist; pass a .txt (one text per line) or .tsv/.csv file.")
    try:
        if path.suffix in (".tsv", ".csv"):
            out = _read_table(path, limit)
        else:
            lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
            out = TextSet(path, [line for line in lines if line])
    except UnicodeDecodeError:
        raise ToolchainError(f"data file {path} is not UTF-8 text; convert it to UTF-8.") from None
    if not out.texts:
        raise ToolchainError(f"data file {path} holds no texts; give it at least one non-empty line.")
    if limit is not None:
        out.texts = out.texts[:limit]
        out.labels = out.labels[:limit] if out.labels is not None else None
        out.targets = out.targets[:limit] if out.targets is not None else None
        out.images = out.images[:limit] if out.images is not None else None
    return out


def _image_set(path: Path, rows: list[dict[str, str]], column: str, label_id) -> TextSet:
    """An image table's rows as a TextSet: the image files (rendered where missing), their labels if any."""
    images = image_paths(path, rows, column)
    labels = [label_id(row, line) for line, row in enumerate(rows, 2)] if label_id else None
    return TextSet(path, [str(p) for p in images], labels, images=images)


def _int_label(column: str, path: Path):
    def label(row: dict[str, str], line: int) -> int:
        try:
            return int(row[column])
        except (TypeError, ValueError):
            raise ToolchainError(f"{path} line {line}: label {row[column]!r} is not an integer class id.") from None
    return label


def _read_table(path: Path, limit: int | None = None) -> TextSet:
    delimiter = "\t" if path.suffix == ".tsv" else ","
    with open(path, encoding="utf-8-sig", newline="") as fh:  # -sig: a BOM would hide the first column's name
        reader = csv.DictReader(fh, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
        columns = reader.fieldnames or []
        image_col = image_column(columns)
        if image_col is not None:  # only the first LIMIT rows: their images may have to be drawn first
            rows = [row for _, row in zip(range(limit or 10**12), reader)]
            label_col = next((c for c in LABEL_COLUMNS if c in columns), None)
            return _image_set(path, rows, image_col, _int_label(label_col, path) if label_col else None)
        text_col = next((c for c in TEXT_COLUMNS if c in columns), None)
        if text_col is None:
            raise ToolchainError(f"{path} has columns {columns}; it needs a text column named one of {list(TEXT_COLUMNS)}.")
        label_col = next((c for c in LABEL_COLUMNS if c in columns), None)
        target_col = next((c for c in TARGET_COLUMNS if c in columns), None)
        texts, labels, targets = [], [], []
        for row in reader:
            text = (row.get(text_col) or "").strip()
            if not text:
                continue
            texts.append(text)
            if target_col:
                targets.append((row.get(target_col) or "").strip())
            if label_col:
                try:
                    labels.append(int(row[label_col]))
                except (TypeError, ValueError):
                    raise ToolchainError(f"{path} line {reader.line_num}: label {row[label_col]!r} is not an integer class id.") from None
    return TextSet(path, texts, labels if label_col else None, targets if target_col else None)


def read_split(path: Path, split, labels: list[str] | None) -> TextSet:
    """Read one recipe data split (a recipe.Split) strictly: the named columns, labels mapped to class ids.

    Labels may be class ids (0..n-1) or class names from ``labels``; anything else is an error naming
    the line. ``labels=None`` reads text only (pretraining).
    """
    if not path.is_file():
        raise ToolchainError(f"data file {path} does not exist; fix 'path' in the recipe or add the file under models/data/.")
    if path.suffix not in (".tsv", ".csv"):
        if (split.label is not None and labels is not None) or split.image is not None:
            raise ToolchainError(f"{path} is plain text but the recipe names a label or image column; use a .tsv/.csv file.")
        texts = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        out = TextSet(path, texts[: split.limit] if split.limit else texts)
    elif split.image is not None:
        out = _read_image_columns(path, split.image, split.label if labels is not None else None, labels, split.limit)
    else:
        out = _read_columns(path, split.text, split.label if labels is not None else None, labels, split.limit)
    if not out.texts:
        raise ToolchainError(f"data file {path} has no examples (empty split); give it at least one row.")
    return out


def _read_columns(path: Path, text_col: str, label_col: str | None, labels: list[str] | None, limit: int | None) -> TextSet:
    delimiter = "\t" if path.suffix == ".tsv" else ","
    ids = {name: i for i, name in enumerate(labels or [])}
    with open(path, encoding="utf-8-sig", newline="") as fh:  # -sig: a BOM would hide the first column's name
        reader = csv.DictReader(fh, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
        columns = reader.fieldnames or []
        for want in (text_col, label_col):
            if want is not None and want not in columns:
                raise ToolchainError(f"{path} has columns {columns}, not {want!r}; fix the column names in the recipe.")
        texts, found = [], []
        for row in reader:
            if limit is not None and len(texts) >= limit:
                break
            text = (row.get(text_col) or "").strip()
            if not text:
                continue
            texts.append(text)
            if label_col is not None:
                found.append(_label_id(row.get(label_col), ids, path, reader.line_num))
    return TextSet(path, texts, found if label_col is not None else None)


def _read_image_columns(path: Path, image_col: str, label_col: str | None, labels: list[str] | None,
                        limit: int | None) -> TextSet:
    delimiter = "\t" if path.suffix == ".tsv" else ","
    ids = {name: i for i, name in enumerate(labels or [])}
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
        columns = reader.fieldnames or []
        for want in (image_col, label_col):
            if want is not None and want not in columns:
                raise ToolchainError(f"{path} has columns {columns}, not {want!r}; fix the column names in the recipe.")
        rows = [row for _, row in zip(range(limit or 10**12), reader)]
    label_id = (lambda row, line: _label_id(row.get(label_col), ids, path, line)) if label_col else None
    return _image_set(path, rows, image_col, label_id)


def _label_id(value: str | None, ids: dict[str, int], path: Path, line: int) -> int:
    value = (value or "").strip()
    if value in ids:
        return ids[value]
    if value.lstrip("-").isdigit() and 0 <= int(value) < len(ids):
        return int(value)
    raise ToolchainError(f"{path} line {line}: label {value!r} is not one of the declared labels {list(ids)} "
                         f"(or their ids 0..{len(ids) - 1}); fix the data or the recipe's labels.")
