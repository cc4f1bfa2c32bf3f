"""What the messenger channels share: splitting a message under a length limit without breaking a character.

Each messenger counts length its own way (Telegram in UTF-16 code units, WeCom in UTF-8 bytes), so the
splitter takes the measure as an argument; everything else about where to cut is the same for both.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from bot.text import sentences

Measure = Callable[[str], int]

# A word or clause break: before whitespace, after a Chinese comma or enumeration comma, after an ASCII comma
# not inside a number.
_WORD_BREAK = re.compile(r"(?=\s)|(?<=[，、])|(?<=,)(?!\d)")
_EMOJI_MODIFIERS = ("\U0001f3fb", "\U0001f3ff")  # skin tones: part of the emoji before them
_REGIONAL_INDICATORS = ("\U0001f1e6", "\U0001f1ff")  # a flag is a pair of them
_ZWJ = "\u200d"


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units (how Telegram counts)."""
    return len(text.encode("utf-16-le")) // 2


def utf8_len(text: str) -> int:
    """Length in UTF-8 bytes (how WeCom counts)."""
    return len(text.encode("utf-8"))


def fit_prefix(text: str, limit: int, measure: Measure) -> int:
    """The largest index i such that `measure(text[:i])` is at most `limit` (measure grows with the prefix)."""
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if measure(text[:mid]) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return lo


def split_text(text: str, limit: int, measure: Measure = len) -> list[str]:
    """Split text into stripped parts of at most `limit` by `measure`, at the best boundary in reach.

    Preferred, in order: a paragraph break, a line break, a sentence end, a word or clause break; each only
    when it keeps the part over a third of what fits. Otherwise a hard cut that never splits a character.
    A single character longer than `limit` on its own becomes a part by itself.
    """
    parts: list[str] = []
    text = text.strip()
    while measure(text) > limit:
        end = max(1, fit_prefix(text, limit, measure))
        cut = _boundary(text, end)
        parts.append(text[:cut].strip())
        text = text[cut:].strip()
    parts.append(text)
    return [p for p in parts if p]


def _boundary(text: str, end: int) -> int:
    """Where to cut a text of which `text[:end]` fits: the best boundary in reach past a third of `end`."""
    floor = end // 3
    candidates = (text.rfind("\n\n", 0, end + 2), text.rfind("\n", 0, end + 1),
                  _last_end(sentences.MESSAGE_SPLIT, text, end), _last_end(_WORD_BREAK, text, end))
    return next((cut for cut in candidates if cut > floor), _hard_cut(text, end))


def _last_end(pattern: re.Pattern[str], text: str, end: int) -> int:
    """The end of the last match of `pattern` in `text` that ends by `end`, or -1."""
    last = -1
    for match in pattern.finditer(text):
        if match.end() > end:
            break
        last = match.end()
    return last


def _hard_cut(text: str, end: int) -> int:
    """The last index at or before `end` that does not split a character (`end` when there is none)."""
    return next((i for i in range(end, 0, -1) if not _inside_character(text, i)), end)


def _inside_character(text: str, i: int) -> bool:
    """True when a cut before `text[i]` would split what the reader sees as one character."""
    if i >= len(text):
        return False
    after = text[i]
    return (unicodedata.category(after).startswith("M")  # combining marks, variation selectors
            or _ZWJ in (after, text[i - 1])
            or _EMOJI_MODIFIERS[0] <= after <= _EMOJI_MODIFIERS[1]
            or _inside_flag(text, i))


def _inside_flag(text: str, i: int) -> bool:
    """True when `text[i]` is the second regional indicator of a flag."""
    low, high = _REGIONAL_INDICATORS
    run = 0
    while run < i and low <= text[i - 1 - run] <= high:
        run += 1
    return run % 2 == 1 and low <= text[i] <= high
