"""A generated, seeded translation data set: written dates and amounts -> ISO form and Chinese.

Each pair is (source, iso, zh), e.g.::

    the twenty-fifth of November, 2026    2026-11-25    2026年11月25日
    one thousand two hundred and five      1205          一千二百零五

Pure Python (random, datetime, hashlib), torch-free. Rules that keep every source mapped to exactly one
target:

- slash dates: ``25/11/2026`` (day/month) is used only when the day is over 12; ``11/25/2026 (US)``
  (month/day) always carries the ``(US)`` marker;
- two-digit years (``Nov 25 '26``): ``'00``-``'49`` are 2000-2049, ``'50``-``'99`` are 1950-1999
  (TWO_DIGIT_PIVOT), which covers the whole date range 1950-01-01 .. 2049-12-31;
- weekdays, when a form names one, are the real weekday of that date;
- amounts are whole numbers 0..999,999 with no currency sign; Chinese numerals use 二 (not 两), 零 for a
  run of zeros inside the number, 十 (not 一十) only at the very start (10 十, 110 一百一十,
  10005 一万零五).

Splits share no target: a target's split is a seeded hash of its iso form, so every target belongs to
exactly one split, and every source string occurs once in the whole data set.

Regenerate the checked-in files with ``python -m toolchain.data.dates --out models/data/dates``.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Callable

from toolchain.artifact.atomic import write_bytes
from toolchain.runtime.errors import ToolchainError

SPLITS = ("train", "dev", "test")
SIZES = {"train": 40000, "dev": 1000, "test": 1000}
SEED = 0
DATE_SHARE = 0.75  # of each split; the rest are amounts
FIRST_DATE, LAST_DATE = date(1950, 1, 1), date(2049, 12, 31)
MAX_AMOUNT = 999_999
TWO_DIGIT_PIVOT = 50  # '00-'49 -> 20xx, '50-'99 -> 19xx
COLUMNS = ("source", "iso", "zh")
MAX_TRIES = 200  # draws per pair before giving up (sizes too large for the target space)


@dataclass(frozen=True)
class Pair:
    """One example: an English source, its ISO form and its Chinese form."""

    source: str
    iso: str
    zh: str


# ---- English words -------------------------------------------------------------------------------

ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
ORDINAL_ONES = ("zeroth first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
                "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth").split()
ORDINAL_TENS = "_ _ twentieth thirtieth".split()
MONTHS = ("January February March April May June July August September October November December").split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()


def number_words(n: int, british: bool = True) -> str:
    """English words for 0 <= n <= 999,999: 1205 -> 'one thousand two hundred and five' ('and' if british)."""
    if not 0 <= n <= MAX_AMOUNT:
        raise ValueError(f"{n} is outside 0..{MAX_AMOUNT}")
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("-" + ONES[n % 10] if n % 10 else "")
    if n < 1000:
        head, rest = f"{ONES[n // 100]} hundred", n % 100
    else:
        head, rest = f"{number_words(n // 1000, british)} thousand", n % 1000
    if not rest:
        return head
    joiner = " and " if british and rest < 100 else " "  # British: 'one hundred and five', 'one thousand and five'
    return head + joiner + number_words(rest, british)


def ordinal_words(n: int) -> str:
    """Ordinal words for 1 <= n <= 31: 25 -> 'twenty-fifth'."""
    if n < 20:
        return ORDINAL_ONES[n]
    if n % 10 == 0:
        return ORDINAL_TENS[n // 10]
    return f"{TENS[n // 10]}-{ORDINAL_ONES[n % 10]}"


def ordinal_suffix(n: int) -> str:
    """25 -> '25th', 1 -> '1st', 12 -> '12th', 22 -> '22nd'."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def year_words(year: int) -> str:
    """A year as spoken: 1987 'nineteen eighty-seven', 2000 'two thousand', 2005 'two thousand and five',
    2026 'twenty twenty-six'."""
    if 2000 <= year < 2010:
        return number_words(year)
    return f"{number_words(year // 100)} {number_words(year % 100)}"


def two_digit_year(year: int) -> str:
    """2026 -> "'26"; read back with TWO_DIGIT_PIVOT (only 1950-2049 round-trip)."""
    if not 2000 - (100 - TWO_DIGIT_PIVOT) <= year < 2000 + TWO_DIGIT_PIVOT:
        raise ValueError(f"{year} has no unambiguous two-digit form")
    return f"'{year % 100:02d}"


# ---- Chinese -------------------------------------------------------------------------------------

ZH_DIGITS = "零一二三四五六七八九"
ZH_UNITS = ("千", "百", "十", "")


def _zh_section(n: int) -> str:
    """Chinese for 1 <= n <= 9999, with 零 for each run of zeros between non-zero digits."""
    out, zero_pending = [], False
    for digit, unit in zip(f"{n:04d}", ZH_UNITS):
        if digit == "0":
            zero_pending = bool(out)
            continue
        if zero_pending:
            out.append("零")
            zero_pending = False
        out.append(ZH_DIGITS[int(digit)] + unit)
    return "".join(out)


def zh_number(n: int) -> str:
    """Chinese numerals for 0..999,999: 110 一百一十, 10005 一万零五, 100000 十万, 999999 九十九万九千九百九十九."""
    if not 0 <= n <= MAX_AMOUNT:
        raise ValueError(f"{n} is outside 0..{MAX_AMOUNT}")
    if n == 0:
        return "零"
    high, low = divmod(n, 10000)
    text = _zh_section(high) + "万" if high else ""
    if low:
        text += ("零" if high and low < 1000 else "") + _zh_section(low)
    return text[1:] if text.startswith("一十") else text  # 十五, 十万, but 一百一十


def zh_date(d: date) -> str:
    return f"{d.year}年{d.month}月{d.day}日"


# ---- the forms: name -> function(value, rng) -> source text, or None where the form does not apply ----

Form = Callable[[date, random.Random], str | None]
AmountForm = Callable[[int, random.Random], str | None]


def _abbr(d: date) -> str:
    return MONTHS[d.month - 1][:3]


DATE_FORMS: dict[str, Form] = {
    "ordinal_words": lambda d, rng: f"the {ordinal_words(d.day)} of {MONTHS[d.month - 1]}, {d.year}",
    "month_ordinal": lambda d, rng: f"{MONTHS[d.month - 1]} {ordinal_suffix(d.day)}{rng.choice(('', ','))} {d.year}",
    "ordinal_of": lambda d, rng: f"{ordinal_suffix(d.day)} of {MONTHS[d.month - 1]} {d.year}",
    "day_month_year": lambda d, rng: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
    "day_abbr_year": lambda d, rng: f"{d.day} {_abbr(d)} {d.year}",
    "abbr_two_digit_year": lambda d, rng: f"{_abbr(d)} {d.day} {two_digit_year(d.year)}",
    "weekday_long": lambda d, rng: f"{WEEKDAYS[d.weekday()]}, {d.day} {MONTHS[d.month - 1]} {d.year}",
    "weekday_short": lambda d, rng: f"{WEEKDAYS[d.weekday()][:3]}, {_abbr(d)} {d.day}, {d.year}",
    "dmy_slash": lambda d, rng: f"{d.day:02d}/{d.month:02d}/{d.year}" if d.day > 12 else None,
    "us_slash": lambda d, rng: f"{d.month:02d}/{d.day:02d}/{d.year} (US)",
    "dotted": lambda d, rng: f"{d.year}.{d.month:02d}.{d.day:02d}",
    "spoken": lambda d, rng: f"{MONTHS[d.month - 1]} the {ordinal_words(d.day)}, {year_words(d.year)}",
}

AMOUNT_FORMS: dict[str, AmountForm] = {
    "words_british": lambda n, rng: number_words(n, british=True),
    "words_american": lambda n, rng: number_words(n, british=False),
    "digits_commas": lambda n, rng: f"{n:,}",
    "digits_plain": lambda n, rng: str(n) if n >= 1000 else None,  # below 1000 it equals digits_commas
}

CASES: dict[str, Callable[[str], str]] = {
    "as_is": str, "lower": str.lower, "upper": str.upper, "capitalized": str.capitalize,
}
CASE_WEIGHTS = (5, 2, 1, 1)  # how often each case is drawn


def date_pair(d: date, form: str, rng: random.Random | None = None, case: str = "as_is") -> Pair | None:
    """The pair for date ``d`` in the named form (None where the form does not apply to ``d``)."""
    source = DATE_FORMS[form](d, rng or random.Random(0))
    return Pair(CASES[case](source), d.isoformat(), zh_date(d)) if source is not None else None


def amount_pair(n: int, form: str, rng: random.Random | None = None, case: str = "as_is") -> Pair | None:
    """The pair for amount ``n`` in the named form (None where the form does not apply to ``n``)."""
    source = AMOUNT_FORMS[form](n, rng or random.Random(0))
    return Pair(CASES[case](source), str(n), zh_number(n)) if source is not None else None


# ---- sampling ------------------------------------------------------------------------------------

def split_of(iso: str, seed: int, sizes: dict[str, int]) -> str:
    """The one split a target belongs to: a seeded hash of its iso form, shares proportional to sizes."""
    digest = hashlib.blake2b(f"{seed}\0{iso}".encode(), digest_size=8).digest()
    u, total, edge = int.from_bytes(digest, "big") / 2**64, sum(sizes.values()), 0.0
    for name in SPLITS:
        edge += sizes[name] / total
        if u < edge:
            return name
    return SPLITS[-1]


def _sample_amount(rng: random.Random) -> int:
    """1 to 6 digits, equally likely; inner digits are 0 a third of the time (so 零 rules are exercised)."""
    width = rng.randint(1, 6)
    if width == 1:
        return rng.randint(0, 9)
    digits = [rng.randint(1, 9)] + [0 if rng.random() < 1 / 3 else rng.randint(1, 9) for _ in range(width - 1)]
    return int("".join(map(str, digits)))


class _Drawer:
    """Draws pairs with unique sources, checking that no source ever maps to two targets."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.seen: dict[str, str] = {}  # source -> iso

    def take(self, make: Callable[[str, str], Pair | None], forms: dict) -> Pair | None:
        """One pair from ``make(form, case)`` with a random form and case; None if it does not apply or repeats."""
        case = self.rng.choices(list(CASES), weights=CASE_WEIGHTS)[0]
        pair = make(self.rng.choice(list(forms)), case)
        if pair is None:
            return None
        if self.seen.get(pair.source, pair.iso) != pair.iso:
            raise AssertionError(f"source {pair.source!r} maps to both {self.seen[pair.source]} and {pair.iso}")
        if pair.source in self.seen:
            return None
        self.seen[pair.source] = pair.iso
        return pair


def _dates_for(split: str, count: int, drawer: _Drawer, seed: int, sizes: dict[str, int]) -> list[Pair]:
    """``count`` date pairs whose targets all belong to ``split``; distinct targets while the pool lasts."""
    days = (LAST_DATE - FIRST_DATE).days + 1
    every_day = (FIRST_DATE + timedelta(i) for i in range(days))
    pool = [d for d in every_day if split_of(d.isoformat(), seed, sizes) == split]
    drawer.rng.shuffle(pool)
    out: list[Pair] = []
    for i in range(count * MAX_TRIES):
        if len(out) == count or not pool:
            break
        d = pool[i % len(pool)]
        pair = drawer.take(lambda form, case: date_pair(d, form, drawer.rng, case), DATE_FORMS)
        if pair is not None:
            out.append(pair)
    if len(out) < count:
        raise ToolchainError(f"could not draw {count} {split} dates with distinct sources from the {len(pool)} dates "
                             f"its share of the sizes gives it; ask for fewer {split} pairs or a larger {split} share.")
    return out


def _amounts_for(split: str, count: int, drawer: _Drawer, seed: int, sizes: dict[str, int]) -> list[Pair]:
    """``count`` amount pairs whose targets all belong to ``split``."""
    out: list[Pair] = []
    for _ in range(count * MAX_TRIES):
        if len(out) == count:
            break
        n = _sample_amount(drawer.rng)
        if split_of(str(n), seed, sizes) != split:
            continue
        pair = drawer.take(lambda form, case: amount_pair(n, form, drawer.rng, case), AMOUNT_FORMS)
        if pair is not None:
            out.append(pair)
    if len(out) < count:
        raise ToolchainError(f"could not draw {count} {split} amounts with distinct sources in {count * MAX_TRIES} "
                             f"tries; ask for fewer {split} pairs or a larger {split} share.")
    return out


def generate(seed: int = SEED, sizes: dict[str, int] | None = None) -> dict[str, list[Pair]]:
    """The three splits, each a shuffled list of pairs; the same seed and sizes give the same lists."""
    sizes = dict(SIZES if sizes is None else sizes)
    if sorted(sizes) != sorted(SPLITS) or any(not isinstance(v, int) or v < 1 for v in sizes.values()):
        raise ToolchainError(f"sizes must give a positive count for each of {list(SPLITS)}, got {sizes!r}.")
    drawer = _Drawer(random.Random(seed))
    splits = {}
    for name in SPLITS:
        n_dates = round(sizes[name] * DATE_SHARE)
        pairs = _dates_for(name, n_dates, drawer, seed, sizes)
        pairs += _amounts_for(name, sizes[name] - n_dates, drawer, seed, sizes)
        drawer.rng.shuffle(pairs)
        splits[name] = pairs
    return splits


# ---- files ---------------------------------------------------------------------------------------

def to_tsv(pairs: list[Pair]) -> str:
    """Header ``source<TAB>iso<TAB>zh`` and one line per pair, newline-terminated."""
    lines = ["\t".join(COLUMNS)] + [f"{p.source}\t{p.iso}\t{p.zh}" for p in pairs]
    return "\n".join(lines) + "\n"


def write(out_dir: str | Path, seed: int = SEED, sizes: dict[str, int] | None = None) -> dict[str, Path]:
    """Write train.tsv, dev.tsv and test.tsv under ``out_dir`` (each to a temporary file, then renamed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, pairs in generate(seed, sizes).items():
        path = out_dir / f"{name}.tsv"
        write_bytes(path, to_tsv(pairs).encode("utf-8"))
        paths[name] = path
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolchain.data.dates", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory for train.tsv, dev.tsv, test.tsv")
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed (default {SEED})")
    args = parser.parse_args(argv)
    for name, path in write(args.out, args.seed).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
