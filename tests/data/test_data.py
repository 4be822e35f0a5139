"""read_texts: .txt / .tsv / .csv calibration and evaluation files, and the errors that name the fix."""

from __future__ import annotations

import pytest

from toolchain.data.texts import DEFAULT_EVAL, TEXT_COLUMNS, read_texts
from toolchain.runtime import ToolchainError


def _write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_txt_one_text_per_line_blank_lines_dropped(tmp_path):
    p = _write(tmp_path / "c.txt", "  first text \n\nsecond text\n   \nthird\n")
    out = read_texts(p)
    assert out.texts == ["first text", "second text", "third"]
    assert out.labels is None and out.path == p


def test_tsv_sentence_and_label(tmp_path):
    p = _write(tmp_path / "d.tsv", "sentence\tlabel\na good film\t1\na bad film\t0\n")
    out = read_texts(p)
    assert out.texts == ["a good film", "a bad film"]
    assert out.labels == [1, 0]


def test_tsv_content_column_without_labels(tmp_path):
    p = _write(tmp_path / "d.tsv", "id\tcontent\n1\tfirst\n2\tsecond\n")
    out = read_texts(p)
    assert out.texts == ["first", "second"] and out.labels is None


def test_tsv_keeps_quotes_verbatim(tmp_path):
    p = _write(tmp_path / "d.tsv", 'sentence\tlabel\n"quoted" start\t1\nit\'s "fine\t0\n')
    assert read_texts(p).texts == ['"quoted" start', 'it\'s "fine']


def test_csv_with_quoted_commas(tmp_path):
    p = _write(tmp_path / "d.csv", 'text,label\n"hello, world",1\nplain,0\n')
    out = read_texts(p)
    assert out.texts == ["hello, world", "plain"] and out.labels == [1, 0]


def test_rows_with_empty_text_are_skipped_with_their_label(tmp_path):
    p = _write(tmp_path / "d.tsv", "sentence\tlabel\none\t1\n\t0\ntwo\t0\n")
    out = read_texts(p)
    assert out.texts == ["one", "two"] and out.labels == [1, 0]


def test_missing_text_column_names_allowed_columns(tmp_path):
    p = _write(tmp_path / "d.tsv", "review\tlabel\nnice\t1\n")
    with pytest.raises(ToolchainError) as err:
        read_texts(p)
    msg = str(err.value)
    assert "'review'" in msg
    for col in TEXT_COLUMNS:
        assert repr(col) in msg


def test_non_integer_label_names_the_line(tmp_path):
    p = _write(tmp_path / "d.tsv", "sentence\tlabel\nok\t1\nalso ok\t0\nbad one\tpositive\n")
    with pytest.raises(ToolchainError, match=r"d\.tsv line 4: label 'positive' is not an integer class id"):
        read_texts(p)


def test_label_line_number_counts_blank_lines(tmp_path):
    # the csv reader skips blank lines; the reported line must still be the file's line
    p = _write(tmp_path / "d.tsv", "sentence\tlabel\nok\t1\n\n\nbad\tx\n")
    with pytest.raises(ToolchainError, match=r"line 5: label 'x'"):
        read_texts(p)


@pytest.mark.parametrize("name", ["c.txt", "d.tsv"])
def test_non_utf8_file(tmp_path, name):
    p = tmp_path / name
    p.write_bytes("sentence\tlabel\ncaf\u00e9 cr\u00e8me\t1\n".encode("latin-1"))
    with pytest.raises(ToolchainError, match="is not UTF-8 text; convert it to UTF-8"):
        read_texts(p)


def test_utf8_bom_is_ignored(tmp_path):
    p = _write(tmp_path / "d.csv", "\ufeffsentence,label\nhello,1\n")
    out = read_texts(p)
    assert out.texts == ["hello"] and out.labels == [1]
    assert read_texts(_write(tmp_path / "c.txt", "\ufeffhello\n")).texts == ["hello"]


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ToolchainError, match=r"nope\.txt does not exist"):
        read_texts(tmp_path / "nope.txt")
    with pytest.raises(ToolchainError, match="holds no texts"):
        read_texts(_write(tmp_path / "empty.txt", "\n  \n"))
    with pytest.raises(ToolchainError, match="holds no texts"):
        read_texts(_write(tmp_path / "header.tsv", "sentence\tlabel\n"))


def test_limit_cuts_texts_and_labels_together(tmp_path):
    rows = "".join(f"text {i}\t{i % 2}\n" for i in range(10))
    p = _write(tmp_path / "d.tsv", "sentence\tlabel\n" + rows)
    out = read_texts(p, limit=3)
    assert out.texts == ["text 0", "text 1", "text 2"] and out.labels == [0, 1, 0]
    assert len(read_texts(p, limit=100).texts) == 10


@pytest.mark.parametrize("limit", [0, -1, 2.5, True])
def test_bad_limit(tmp_path, limit):
    p = _write(tmp_path / "c.txt", "a\nb\nc\n")
    with pytest.raises(ToolchainError, match="limit must be a positive number of texts"):
        read_texts(p, limit=limit)


def test_default_is_bundled_sst2_dev():
    if not DEFAULT_EVAL.is_file():
        pytest.skip("bundled SST-2 dev split not present")
    out = read_texts(limit=5)
    assert out.path == DEFAULT_EVAL and len(out.texts) == 5
    assert out.labels is not None and set(out.labels) <= {0, 1}
