"""English questions and answers over Chinese content: English names mapped to the content's spelling,
the model's Chinese question taken or refused, the glossary for translating an answer back, and the
check that a translation adds nothing."""

from __future__ import annotations

import re

from bot.content.knowledge import ContentSet
from bot.text.markers import strip_markers
from bot.text.phrases import language
from bot.text.words import HAN, HAN_RUN, latin_names, number_in, numbers
from bot.types import Reply


def map_english(question: str, content: ContentSet, *, replace: bool = False) -> str:
    """Annotate other-language names with the content's spelling: 'Zhao Xiaoguang (赵晓光)', 'iFlytek (科大讯飞)'.

    Known spellings come from the content's aliases.yaml; person names are matched by their pinyin.
    With `replace`, the content's spelling stands instead of the original ('Who is 赵晓光?').
    """
    pinyin = content.pinyin
    spans = [(m.start(), m.end(), m.group(0))
             for m in re.finditer(r"[A-Za-z0-9](?:[A-Za-z0-9-]|'(?!s\b))*", question)]  # not the possessive 's
    out, i, pos = [], 0, 0
    while i < len(spans):
        for size in (6, 5, 4, 3, 2, 1):
            group = spans[i : i + size]
            if len(group) < size:
                continue
            phrase = question[group[0][0] : group[-1][1]].lower()
            joined = "".join(w for _, _, w in group).lower()
            by_pinyin = pinyin.get(joined) if len(joined) >= 5 and joined.isalpha() else None
            name = content.aliases.get(phrase) or by_pinyin
            if name and name.lower() != phrase:
                out.append(question[pos : group[0][0]] + name if replace
                           else question[pos : group[-1][1]] + f" ({name})")
                pos, i = group[-1][1], i + size
                break
        else:
            i += 1
    return "".join(out) + question[pos:]


def english_names(text: str, content: ContentSet) -> dict[str, str]:
    """Chinese terms in `text` with an English spelling: from aliases.yaml, or pinyin from annotations."""
    out = {term: spelling for term, spelling in content.alias_names.items() if term in text}
    for m in re.finditer(rf"([A-Za-z][A-Za-z ]+?) \(([{HAN}]+)\)", text):
        out.setdefault(m.group(2), m.group(1).title() if m.group(1).islower() else m.group(1))
    return out


def faithful(english: str, reply: Reply, content: ContentSet) -> bool:
    """A translation adds no number or Latin-script name that the checked answer and its passages lack."""
    source = reply.text + "".join(c.section + c.text for c in reply.citations)
    known = source.lower() + " " + " ".join(content.alias_names.values()).lower() + " " + " ".join(content.aliases)
    added_numbers = [n for n in numbers(english) if not number_in(n, source)]
    added_names = [w for w in latin_names(english) if w not in known]
    # A faithful English rendering takes well under one word per Chinese character; much more means
    # the model added its own prose ("a leading figure in the field of ...").
    answer = strip_markers(reply.text)
    budget = len(HAN_RUN.sub("", answer).split()) + sum(len(r) for r in HAN_RUN.findall(answer))
    return not added_numbers and not added_names and len(english.split()) <= max(8, budget)


def chinese_question(translated: str, annotated: str) -> tuple[str, str]:
    """(the question to answer and check, the model's translation for the log): the model's first line,
    unless it is not Chinese or lost a name of the annotated question; then the annotated original."""
    text = translated.strip().splitlines()[0] if translated.strip() else ""
    text = re.sub(rf"([{HAN}]{{2,}})\s*[（(]\1[)）]", r"\1", text)  # "赵晓光（赵晓光）"
    # A translation that lost the question's Chinese names is worse than the annotated original.
    kept = all(name in text for name in re.findall(r"\(([^)]*)\)", annotated))
    return (text if language(text) == "zh" and kept else annotated), text


def glossary(answer: str, question: str, content: ContentSet) -> str:
    """'科大讯飞 = iFlytek；…' for the names in a checked answer and its question ('-' when none)."""
    names = english_names(answer + " " + map_english(question, content), content)
    return "；".join(f"{zh} = {en}" for zh, en in names.items()) or "-"


def english_answer(draft: str, reply: Reply, content: ContentSet) -> str | None:
    """The English answer to show, or None when the draft is not English or says more than the checked one."""
    english = strip_markers(draft).strip()
    english = re.sub(r"^[^.!?]*\?\s*", "", english) or english  # the model sometimes repeats the question
    return english if english and language(english) == "en" and faithful(english, reply, content) else None
