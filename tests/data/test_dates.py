"""The generated dates-and-amounts translation set (toolchain.data.dates), its reader and its metrics."""

from __future__ import annotations

import math
import random
import re
from datetime import date, timedelta
from pathlib import Path

import pytest

from toolchain.data import dates
from toolchain.data.dates import (AMOUNT_FORMS, DATE_FORMS, SIZES, SPLITS, Pair, amount_pair, date_pair, generate,
                                  number_words, write, zh_number)
from toolchain.data.metrics import bleu4, char_error_rate, edit_distance, exact_match
from toolchain.data.pairs import read_pairs
from toolchain.runtime import ToolchainError

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "data" / "dates"
SMALL = {"train": 300, "dev": 40, "test": 40}
NOV25 = date(2026, 11, 25)


def _rows(path: Path) -> list[tuple[str, str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "source\tiso\tzh"
    return [tuple(line.split("\t")) for line in lines[1:]]


# ---- conversions ----------------------------------------------------------------------------------

@pytest.mark.parametrize("form, source", [
    ("ordinal_words", "the twenty-fifth of November, 2026"),
    ("ordinal_of", "25th of November 2026"),
    ("day_month_year", "25 November 2026"),
    ("day_abbr_year", "25 Nov 2026"),
    ("abbr_two_digit_year", "Nov 25 '26"),
    ("weekday_long", "Wednesday, 25 November 2026"),
    ("weekday_short", "Wed, Nov 25, 2026"),
    ("dmy_slash", "25/11/2026"),
    ("us_slash", "11/25/2026 (US)"),
    ("dotted", "2026.11.25"),
    ("spoken", "November the twenty-fifth, twenty twenty-six"),
])
def test_each_date_form(form, source):
    assert date_pair(NOV25, form) == Pair(source, "2026-11-25", "2026年11月25日")


def test_month_ordinal_with_and_without_comma_and_cases():
    seen = {date_pair(NOV25, "month_ordinal", random.Random(s)).source for s in range(20)}
    assert seen == {"November 25th 2026", "November 25th, 2026"}
    assert date_pair(NOV25, "day_abbr_year", case="upper").source == "25 NOV 2026"
    assert date_pair(NOV25, "us_slash", case="lower").source == "11/25/2026 (us)"
    assert date_pair(NOV25, "ordinal_words", case="capitalized").source == "The twenty-fifth of november, 2026"


@pytest.mark.parametrize("day, form, source", [
    (date(2001, 1, 1), "ordinal_words", "the first of January, 2001"),
    (date(1999, 3, 22), "ordinal_of", "22nd of March 1999"),
    (date(1999, 3, 13), "ordinal_of", "13th of March 1999"),
    (date(1999, 3, 12), "ordinal_of", "12th of March 1999"),
    (date(1999, 3, 23), "ordinal_of", "23rd of March 1999"),
    (date(1999, 3, 31), "ordinal_of", "31st of March 1999"),
    (date(1999, 3, 30), "ordinal_words", "the thirtieth of March, 1999"),
    (date(1950, 1, 1), "abbr_two_digit_year", "Jan 1 '50"),
    (date(2049, 12, 31), "abbr_two_digit_year", "Dec 31 '49"),
    (date(2000, 2, 29), "abbr_two_digit_year", "Feb 29 '00"),
    (date(2000, 7, 4), "spoken", "July the fourth, two thousand"),
    (date(2005, 5, 30), "spoken", "May the thirtieth, two thousand and five"),
    (date(1987, 8, 23), "spoken", "August the twenty-third, nineteen eighty-seven"),
    (date(2026, 1, 5), "us_slash", "01/05/2026 (US)"),
])
def test_known_dates(day, form, source):
    assert date_pair(day, form).source == source


def test_day_month_slashes_only_when_the_day_cannot_be_a_month():
    assert date_pair(date(2026, 6, 5), "dmy_slash") is None
    assert date_pair(date(2026, 6, 12), "dmy_slash") is None
    assert date_pair(date(2026, 6, 13), "dmy_slash").source == "13/06/2026"


def test_weekdays_are_the_real_ones():
    """Both weekday forms, on known dates and in every shipped row that names a weekday."""
    assert date_pair(date(1969, 7, 20), "weekday_long").source == "Sunday, 20 July 1969"
    assert date_pair(date(2000, 1, 1), "weekday_short").source == "Sat, Jan 1, 2000"
    names = dict(zip(dates.WEEKDAYS, range(7)))
    checked = 0
    for split in SPLITS:
        for source, iso, _ in _rows(SHIPPED / f"{split}.tsv"):
            head = source.split(",")[0].capitalize()
            match = next((n for n in names if n == head or n[:3] == head), None)
            if match is not None:
                assert date.fromisoformat(iso).weekday() == names[match], source
                checked += 1
    assert checked > 3000  # both weekday forms are in the shipped files


@pytest.mark.parametrize("n, words, zh", [
    (0, "zero", "零"), (10, "ten", "十"), (15, "fifteen", "十五"), (21, "twenty-one", "二十一"),
    (100, "one hundred", "一百"), (105, "one hundred and five", "一百零五"), (110, "one hundred and ten", "一百一十"),
    (1000, "one thousand", "一千"), (1005, "one thousand and five", "一千零五"),
    (1205, "one thousand two hundred and five", "一千二百零五"), (2020, "two thousand and twenty", "二千零二十"),
    (10005, "ten thousand and five", "一万零五"), (10010, "ten thousand and ten", "一万零一十"),
    (15000, "fifteen thousand", "一万五千"), (100000, "one hundred thousand", "十万"),
    (110000, "one hundred and ten thousand", "十一万"), (100100, "one hundred thousand one hundred", "十万零一百"),
    (101000, "one hundred and one thousand", "十万一千"), (200034, "two hundred thousand and thirty-four", "二十万零三十四"),
    (999999, "nine hundred and ninety-nine thousand nine hundred and ninety-nine", "九十九万九千九百九十九"),
])
def test_known_amounts(n, words, zh):
    assert amount_pair(n, "words_british") == Pair(words, str(n), zh)
    assert amount_pair(n, "words_american").source == words.replace(" and ", " ")
    assert amount_pair(n, "digits_commas").source == f"{n:,}"
    assert zh_number(n) == zh


def test_plain_digits_only_from_a_thousand():
    assert amount_pair(999, "digits_plain") is None
    assert amount_pair(1205, "digits_plain") == Pair("1205", "1205", "一千二百零五")
    assert amount_pair(1205, "digits_commas").source == "1,205"


def _parse_words(text: str) -> int:
    """An independent reader of English number words (for the round trip)."""
    values = {w: i for i, w in enumerate(dates.ONES)} | {w: 10 * i for i, w in enumerate(dates.TENS) if i > 1}
    total = current = 0
    for word in text.replace("-", " ").split():
        if word == "hundred":
            current *= 100
        elif word == "thousand":
            total, current = total + current * 1000, 0
        elif word != "and":
            current += values[word]
    return total + current


def test_number_words_round_trip_and_chinese_has_no_double_or_trailing_zero():
    rng = random.Random(5)
    for n in list(range(0, 2100)) + [rng.randint(0, 999_999) for _ in range(3000)]:
        for british in (True, False):
            assert _parse_words(number_words(n, british)) == n
        zh = zh_number(n)
        assert "零零" not in zh and (n == 0 or not zh.endswith("零")) and not zh.startswith("一十")


def test_out_of_range_values_are_refused():
    for bad in (-1, 1_000_000):
        with pytest.raises(ValueError):
            zh_number(bad)
        with pytest.raises(ValueError):
            number_words(bad)
    with pytest.raises(ValueError):
        dates.two_digit_year(2050)


class _First(random.Random):
    def choice(self, seq):
        return seq[0]


class _Last(random.Random):
    def choice(self, seq):
        return seq[-1]


def test_no_source_maps_to_two_targets_in_any_form():
    """Every date in the range and many amounts, in every form: no two targets share a source, in any case."""
    targets: dict[str, str] = {}
    picks = (_First(0), _Last(0))
    day = dates.FIRST_DATE
    while day <= dates.LAST_DATE:
        for form in DATE_FORMS:
            for pick in picks:  # both branches of every in-form choice (month_ordinal's comma)
                pair = date_pair(day, form, pick)
                if pair is not None:
                    assert targets.setdefault(pair.source.lower(), pair.iso) == pair.iso, pair
        day += timedelta(days=1)
    for n in list(range(20_000)) + list(range(20_000, 1_000_000, 97)):
        for form in AMOUNT_FORMS:
            pair = amount_pair(n, form)
            if pair is not None:
                assert targets.setdefault(pair.source.lower(), pair.iso) == pair.iso, pair


# ---- generation and the shipped files --------------------------------------------------------------

def test_same_seed_same_pairs_other_seed_other_pairs():
    first = generate(seed=0, sizes=SMALL)
    assert generate(seed=0, sizes=SMALL) == first
    assert generate(seed=1, sizes=SMALL) != first
    assert {k: len(v) for k, v in first.items()} == SMALL


def test_sizes_and_mix_of_the_default():
    assert SIZES == {"train": 40000, "dev": 1000, "test": 1000}
    for split, size in SIZES.items():
        rows = _rows(SHIPPED / f"{split}.tsv")
        assert len(rows) == size
        assert sum("-" in iso for _, iso, _ in rows) == round(size * dates.DATE_SHARE)


def test_splits_share_no_target_and_no_source_has_two_targets():
    rows = {split: _rows(SHIPPED / f"{split}.tsv") for split in SPLITS}
    targets = {split: {iso for _, iso, _ in r} for split, r in rows.items()}
    assert not targets["train"] & targets["dev"] and not targets["train"] & targets["test"]
    assert not targets["dev"] & targets["test"]
    sources = [source for r in rows.values() for source, _, _ in r]
    assert len(sources) == len(set(sources))  # stronger: every source occurs once in the whole set
    for split, pairs in generate(seed=3, sizes=SMALL).items():
        assert all(dates.split_of(p.iso, 3, SMALL) == split for p in pairs)


def test_rows_are_consistent():
    """zh follows from iso in every shipped row; sources are clean single-line text."""
    for split in SPLITS:
        for source, iso, zh in _rows(SHIPPED / f"{split}.tsv"):
            assert source == source.strip() and "\t" not in source and "\r" not in source
            if "-" in iso:
                assert zh == dates.zh_date(date.fromisoformat(iso))
                assert date(1950, 1, 1) <= date.fromisoformat(iso) <= date(2049, 12, 31)
            else:
                assert re.fullmatch(r"0|[1-9]\d{0,5}", iso) and zh == zh_number(int(iso))


def test_shipped_files_are_what_the_generator_writes(tmp_path):
    paths = write(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev.tsv", "test.tsv", "train.tsv"]  # no temp files left
    for split in SPLITS:
        assert paths[split].read_bytes() == (SHIPPED / f"{split}.tsv").read_bytes(), (
            f"{split}.tsv is stale; regenerate: python -m toolchain.data.dates --out models/data/dates")


def test_main_writes_with_a_seed(tmp_path, capsys):
    assert dates.main(["--out", str(tmp_path), "--seed", "7"]) == 0
    assert "train" in capsys.readouterr().out
    assert read_pairs(tmp_path / "dev.tsv").sources != read_pairs(SHIPPED / "dev.tsv").sources


def test_bad_sizes_are_refused():
    with pytest.raises(ToolchainError, match="sizes"):
        generate(sizes={"train": 10, "dev": 0, "test": 1})
    with pytest.raises(ToolchainError, match=r"1 test dates .* from the 0 dates its share .*; ask for fewer test"):
        generate(sizes={"train": 50_000, "dev": 1, "test": 1})  # test's share of 36,525 dates is under one


# ---- the reader ------------------------------------------------------------------------------------

def test_read_pairs_columns_and_limit():
    out = read_pairs(SHIPPED / "test.tsv")
    assert len(out.sources) == len(out.targets) == 1000
    zh = read_pairs(SHIPPED / "test.tsv", target="zh", limit=5)
    assert zh.sources == out.sources[:5] and zh.targets == [row[2] for row in _rows(SHIPPED / "test.tsv")[:5]]


def test_read_pairs_errors_name_the_fix(tmp_path):
    with pytest.raises(ToolchainError, match="does not exist; fix 'path'"):
        read_pairs(tmp_path / "missing.tsv")
    p = tmp_path / "p.tsv"
    p.write_text("source\tiso\tzh\nNov 25 '26\t2026-11-25\t2026年11月25日\n", encoding="utf-8")
    with pytest.raises(ToolchainError, match=r"has no column 'date'; its columns are source, iso, zh; set target ="):
        read_pairs(p, target="date")
    p.write_text("", encoding="utf-8")
    with pytest.raises(ToolchainError, match="no column 'source'; its columns are none"):
        read_pairs(p)
    p.write_text("source\tiso\n", encoding="utf-8")
    with pytest.raises(ToolchainError, match="has no rows"):
        read_pairs(p)
    p.write_text("source\tiso\nfive\t\n", encoding="utf-8")
    with pytest.raises(ToolchainError, match="line 2: column 'iso' is empty"):
        read_pairs(p)
    with pytest.raises(ToolchainError, match="limit"):
        read_pairs(SHIPPED / "dev.tsv", limit=0)


# ---- metrics ---------------------------------------------------------------------------------------

def test_exact_match_and_char_error_rate():
    assert exact_match(["a", "b ", "c"], ["a", "b", "d"]) == pytest.approx(2 / 3)
    assert char_error_rate(["abc"], ["abd"]) == pytest.approx(1 / 3)
    assert char_error_rate(["abc", ""], ["abd", "xy"]) == pytest.approx(3 / 5)  # pooled: (1 + 2) / (3 + 2)
    assert char_error_rate(["kitten"], ["sitting"]) == pytest.approx(3 / 7)
    assert char_error_rate(["2026年11月25日"], ["2026年11月25日"]) == 0.0
    assert edit_distance("", "abc") == edit_distance("abc", "") == 3
    assert edit_distance("flaw", "lawn") == 2


def test_bleu4_hand_computed():
    assert bleu4(["a b c d e"], ["a b c d e"]) == pytest.approx(1.0)
    # 1-grams 5/6, 2-grams 3/5, 3-grams 1/4, 4-grams 0/3 -> smoothed 1/(2*3); no brevity penalty
    expected = (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25
    assert bleu4(["the cat sat on the mat"], ["the cat is on the mat"]) == pytest.approx(expected)
    # clipping: 'the' counts once; 1-grams 1/4; 2..4-grams 0/3, 0/2, 0/1 -> 1/6, 1/8, 1/8; brevity exp(1 - 5/4)
    expected = math.exp(1 - 5 / 4) * (1 / 4 * 1 / 6 * 1 / 8 * 1 / 8) ** 0.25
    assert bleu4(["the the the the"], ["the cat on a mat"]) == pytest.approx(expected)
    assert bleu4(["2026-11-25", "1205"], ["2026-11-25", "1250"]) == pytest.approx(0.5)  # effective order 1
    assert bleu4(["x y z w"], ["a b c d"]) == 0.0 and bleu4([""], ["a"]) == 0.0


def test_metrics_refuse_mismatched_or_empty_lists():
    for metric in (exact_match, char_error_rate, bleu4):
        with pytest.raises(ToolchainError, match="2 predictions for 1 references"):
            metric(["a", "b"], ["a"])
        with pytest.raises(ToolchainError, match="nothing to score"):
            metric([], [])
    with pytest.raises(ToolchainError, match="no characters"):
        char_error_rate([""], [""])
