"""Quantities across languages: the values a Chinese text states (1.2万 is 12000, 两个月 is 2), written the
English way by code (12,000; 300 million), and the values an English text states, to compare them."""

from __future__ import annotations

import re
import warnings

from bot.text.words import MEASURE, UNIT_GROUP, lexicon_lines

# A number written with digits and a Chinese multiplier: 1.2万, 5000万, 3亿.
_MULTIPLIED = re.compile(r"(\d+(?:\.\d+)?)\s*(万亿|千亿|百亿|亿|千万|百万|万)")
_MULTIPLIERS = {"万": 1e4, "百万": 1e6, "千万": 1e7, "亿": 1e8, "百亿": 1e10, "千亿": 1e11, "万亿": 1e12}
_PERCENT = re.compile(r"百分之([零一二两三四五六七八九十百点]+)")
# A Chinese numeral with a place (十, 百, 千, 万, 亿) counts whatever follows it: 一千二百名, 三十家.
_PLACED = re.compile(r"[零一二两三四五六七八九十百千万亿]*[十百千万亿][零一二两三四五六七八九十百千万亿]*")
# Two digits side by side without a place are a range (两三年: two or three years), not 23.
_RANGE = re.compile(r"^[一二两三四五六七八九]{2}$")
_DIGITS = re.compile(r"(?<![\d.,])\d+(?:,\d{3})*(?:\.\d+)?%?")
_COUNTED = re.compile(r"[零一二两三四五六七八九]+(?=[年个位岁])")
_PATTERNS = (_MULTIPLIED, _PERCENT, _DIGITS, _PLACED, _COUNTED)
_EN_NUMBER = re.compile(r"(?<![A-Za-z\d.])(\d+(?:,\d{3})*(?:\.\d+)?)(?:\s*(thousand|million|billion|trillion))?",
                        re.IGNORECASE)
_EN_SCALE = {"thousand": 1e3, "million": 1e6, "billion": 1e9, "trillion": 1e12}
_EN_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
MONTHS = {m: i for i, m in enumerate("january february march april may june july august september october "
                                      "november december".split(), 1)}
_EN_WORD = re.compile(r"[A-Za-z]+")


def _numeral(text: str) -> float | None:
    """The value of a Chinese or Arabic numeral (cn2an's smart mode reads 一千二百, 两, 1.5), or None."""
    import cn2an

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(cn2an.cn2an(text, "smart"))
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def chinese_quantities(text: str) -> dict[str, float]:
    """Each quantity of a Chinese text as written -> its value: '1.2万' -> 12000, '两个' -> 2, '30%' -> 30."""
    out: dict[str, float] = {}
    taken: list[tuple[int, int]] = []
    for pattern in _PATTERNS:  # the longer readings first: 1.2万 before 1.2, 一千二百 before 一
        for m in pattern.finditer(text):
            if any(m.start() < b and a < m.end() for a, b in taken):
                continue
            written = m.group(0)
            multiplier = _MULTIPLIERS.get(m.group(2), 1.0) if pattern is _MULTIPLIED else 1.0
            core = (m.group(1) if pattern in (_MULTIPLIED, _PERCENT) else written).rstrip("%").replace(",", "")
            if _RANGE.match(core) or (value := _numeral(core)) is None:
                continue
            out[written] = value * multiplier
            taken.append(m.span())
    return out


def english_form(value: float) -> str:
    """A value the English way: 12000 -> '12,000', 300000000 -> '300 million', 1.5 -> '1.5'."""
    for word, scale in (("trillion", 1e12), ("billion", 1e9), ("million", 1e6)):
        if value >= scale and value % (scale / 100) == 0:
            return f"{value / scale:g} {word}"
    return f"{value:,.0f}" if value == int(value) else f"{value:g}"


def english_values(text: str) -> set[float]:
    """The values an English text states: digits (with thousands commas and million/billion), number words
    up to twenty, and months by their number (February 28, 2008 -> 2, 28, 2008)."""
    out = {float(m.group(1).replace(",", "")) * _EN_SCALE.get((m.group(2) or "").lower(), 1)
           for m in _EN_NUMBER.finditer(text)}
    for m in _EN_WORD.finditer(text):
        word = m.group(0).lower()
        if word in _EN_WORDS:
            out.add(float(_EN_WORDS[word]))
        elif word in MONTHS and m.group(0)[0].isupper():
            out.add(float(MONTHS[word]))
    return out


def same_value(value: float, values: set[float]) -> bool:
    """`value` is among `values`, up to rounding (12,000 and 1.2万)."""
    return any(abs(value - v) <= 1e-9 * max(1.0, abs(v)) for v in values)


_DATE = re.compile(r"(?:(\d{3,4})\s*年\s*)?(?:(\d{1,2})\s*月\s*)?(?:(\d{1,2})\s*日)?")


def chinese_dates(text: str) -> dict[str, str]:
    """Each date of a Chinese text as written -> its English form, computed: '2008 年 2 月 28 日' ->
    'February 28, 2008', '1943年1月' -> 'January 1943', '1960 年' -> '1960' (not 1960 年代, the 1960s)."""
    out: dict[str, str] = {}
    for m in _DATE.finditer(text):
        year, month, day = m.groups()
        if not (year or month) or (month and not 1 <= int(month) <= 12) or (day and not month):
            continue
        if year and not month and text[m.end() : m.end() + 1] == "代":
            continue
        name = list(MONTHS)[int(month) - 1].capitalize() if month else ""
        english = f"{name} {int(day)}" if day else name
        english = f"{english}, {year}" if day and year else f"{english} {year or ''}"
        out[m.group(0).strip()] = english.strip()
    return out


# Each unit group's first Latin-script spelling (厘米 -> cm), for an English answer.
_LATIN_UNIT = {i: next((u for u in group if u.isascii()), "") for i, group in enumerate(lexicon_lines("units"))}


def chinese_measures(text: str) -> dict[str, str]:
    """Each measure of a Chinese text with a Chinese unit -> its English form: '182厘米' -> '182 cm'."""
    return {m.group(0): f"{m.group(1)} {latin}" for m in MEASURE.finditer(text)
            if not m.group(2).isascii() and (latin := _LATIN_UNIT[UNIT_GROUP[m.group(2).lower()]])}


def units_kept(english: str, answer: str) -> bool:
    """Every measure of the answer whose unit has an English spelling is in the English text with a spelling
    of the same unit (182厘米: 182 cm or 182 centimetres, not 182 m)."""
    stated = {(m.group(1), UNIT_GROUP[m.group(2).lower()]) for m in MEASURE.finditer(english)}
    return all((m.group(1), group) in stated for m in MEASURE.finditer(answer)
               if _LATIN_UNIT[group := UNIT_GROUP[m.group(2).lower()]])
