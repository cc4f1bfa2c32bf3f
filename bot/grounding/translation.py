"""English questions and answers over Chinese content: English names mapped to the content's spelling,
the model's Chinese question taken or refused, the glossary for translating an answer back, and the
check that a translation adds nothing."""

from __future__ import annotations

import re

from bot.content.knowledge import ContentSet
from bot.text.markers import strip_markers
from bot.text.names import is_person, spell_person, unknown_names, whole_word
from bot.text.phrases import language, message
from bot.text.quantities import (
    chinese_dates,
    chinese_measures,
    chinese_quantities,
    english_form,
    english_values,
    same_value,
    units_kept,
)
from bot.text.words import HAN, HAN_RUN, posseg
from bot.types import Reply


def _mapped(question: str, content: ContentSet) -> list[tuple[int, int, str]]:
    """(start, end, the content's term) of each other-language name in the question: aliases.yaml's
    spellings, and person names matched by their pinyin ('Zhao Xiaoguang' -> 赵晓光)."""
    spans = [(m.start(), m.end(), m.group(0))
             for m in re.finditer(r"[A-Za-z0-9](?:[A-Za-z0-9-]|'(?!s\b))*", question)]  # not the possessive 's
    out, i = [], 0
    while i < len(spans):
        for size in (6, 5, 4, 3, 2, 1):
            group = spans[i : i + size]
            if len(group) < size:
                continue
            phrase = question[group[0][0] : group[-1][1]].lower()
            joined = "".join(w for _, _, w in group).lower()
            by_pinyin = content.pinyin.get(joined) if len(joined) >= 5 and joined.isalpha() else None
            name = content.aliases.get(phrase) or by_pinyin
            if name and name.lower() != phrase:
                out.append((group[0][0], group[-1][1], name))
                i += size
                break
        else:
            i += 1
    return out


def map_english(question: str, content: ContentSet, *, replace: bool = False) -> str:
    """Annotate other-language names with the content's spelling: 'Zhao Xiaoguang (赵晓光)', 'iFlytek (科大讯飞)'.

    With `replace`, the content's spelling stands instead of the original ('Who is 赵晓光?').
    """
    out, pos = [], 0
    for start, end, name in _mapped(question, content):
        out.append(question[pos:start] + name if replace else question[pos:end] + f" ({name})")
        pos = end
    return "".join(out) + question[pos:]


def question_names(question: str, content: ContentSet) -> dict[str, str]:
    """The content's terms a question names -> the question's own spelling ('Wulong' for 武隆; title case
    for a lower-case one), aliases.yaml's first spelling for its terms."""
    out = {}
    for start, end, name in _mapped(question, content):
        spelled = question[start:end]
        out[name] = content.alias_names.get(name) or (spelled.title() if spelled.islower() else spelled)
    return out


_DOT = re.compile(rf"(?<=[{HAN}])[·•‧・](?=[{HAN}])")


def _dotted(answer: str) -> set[str]:
    """Foreign names written with a middle dot (罗伯特·莱恩, 贾韦德·艾哈迈德·加米迪): around each dot, the
    segmenter's word before it and after it, overlapping pieces joined."""
    spans: list[list[int]] = []
    for m in _DOT.finditer(answer):
        left = HAN_RUN.findall(answer[: m.start()])[-1]
        right = HAN_RUN.match(answer, m.end())
        before, after = posseg(left)[-1][0], posseg(right.group(0))[0][0] if right else ""
        start, end = m.start() - len(before), m.end() + len(after)
        if spans and start < spans[-1][1]:
            spans[-1][1] = end
        else:
            spans.append([start, end])
    return {answer[a:b] for a, b in spans}


def _names_in(answer: str, content: ContentSet) -> list[str]:
    """Names of people and organisations an answer mentions, longest first, none inside another: the
    content's (`ContentSet.entities`), the words the segmenter tags as person or organisation names (places
    are left to the pinyin check), and foreign names written with a middle dot (罗伯特·莱恩, kept whole:
    transliterations, not pinyin)."""
    found = {e for e in content.entities if e in answer} | _dotted(answer)
    for run in HAN_RUN.findall(answer):
        found.update(w for w, flag in posseg(run) if (flag.startswith("nr") or flag == "nt") and len(w) >= 2)
    out: list[str] = []
    for name in sorted(found, key=len, reverse=True):
        if not any(name in longer for longer in out):
            out.append(name)
    return out


def glossary(answer: str, question: str, content: ContentSet) -> dict[str, str]:
    """One fixed English spelling for each name and quantity of a checked answer (and the question's names):
    aliases.yaml first, then a person's standard pinyin (刘庆峰 = Liu Qingfeng), else the name itself in
    Chinese; quantities, dates and measures computed (1.2万 = 12,000, 2008年2月28日 = February 28, 2008,
    182厘米 = 182 cm)."""
    terms = {term: spelling for term, spelling in content.alias_names.items() if term in answer}
    # Names the question spelled (matched to the content by aliases.yaml or their pinyin) keep its spelling.
    terms.update(question_names(question, content))
    for name in _names_in(answer, content):
        if not any(name in term for term in terms):
            terms[name] = spell_person(name) if is_person(name) else name
    for written, value in chinese_quantities(answer).items():
        # Only what needs converting: 1.2万, 百分之三十, 十五; digits (2008, 139) and 两 stay as they are.
        if not written.rstrip("%").replace(",", "").replace(".", "").isdigit() and value >= 10:
            terms[written] = english_form(value)
    terms.update(chinese_dates(answer))
    terms.update(chinese_measures(answer))
    return terms


def _is_term(spelling: str) -> bool:
    """A common word of aliases.yaml (chairman, large model), not a name (iFlytek, NPC deputy, 360 Group)."""
    return re.fullmatch(r"[a-z][a-z '-]*", spelling) is not None


def missing_names(english: str, answer: str, terms: dict[str, str], content: ContentSet) -> list[str]:
    """The answer's names that the English leaves out or spells otherwise: each name of the glossary that
    the answer holds must stand in it as the glossary spells it (or another aliases.yaml spelling, or in
    Chinese), so 'Jiang Hao' for 江浩然 and an organisation put into English words both fail."""
    out = []
    for zh, en in terms.items():
        if zh not in answer or _is_term(en) or not HAN_RUN.search(zh) or zh in english:
            continue
        spellings = [en] + [s for s, term in content.aliases.items() if term == zh]
        if not any(whole_word(s, english) for s in spellings):
            out.append(zh)
    return out


def glossary_line(terms: dict[str, str]) -> str:
    """The glossary as the translation prompt shows it: '科大讯飞 = iFlytek；刘庆峰 = Liu Qingfeng' ('-' if empty)."""
    return "；".join(f"{zh} = {en}" for zh, en in terms.items()) or "-"


def faithful(english: str, reply: Reply, content: ContentSet, terms: dict[str, str], question: str = "") -> bool:
    """A translation adds nothing the checked answer lacks and keeps its names: each Latin-script name is a
    glossary or alias spelling or stands in the content or the question (whole words), each name of the
    answer is there as the glossary spells it; each number is one the answer or its
    passages state, and the answer's own numbers are all there, in their units; and it is not much longer
    than the answer."""
    answer = strip_markers(reply.text)
    source = answer + "".join(c.section + c.text for c in reply.citations)
    # Every aliases.yaml spelling, lower-cased (the match ignores case), its first ones included.
    spellings = [*terms.values(), *content.aliases]
    if unknown_names(english, spellings, content.whole + "\n" + question):
        return False
    if missing_names(english, answer, terms, content):
        return False
    stated, said = english_values(english), set(chinese_quantities(source).values())
    if any(v != 1 and not same_value(v, said) for v in stated):
        return False
    if any(v != 1 and not same_value(v, stated) for v in chinese_quantities(answer).values()):
        return False
    if not units_kept(english, answer):
        return False
    # A faithful English rendering takes well under one word per Chinese character; much more means
    # the model added its own prose ("a leading figure in the field of ...").
    budget = len(HAN_RUN.sub("", answer).split()) + sum(len(r) for r in HAN_RUN.findall(answer))
    return len(english.split()) <= max(8, budget)


def chinese_question(translated: str, annotated: str) -> tuple[str, str]:
    """(the question to answer and check, the model's translation for the log): the model's first line,
    unless it is not Chinese, is no question (the model answered it: '刘庆峰是科大讯飞的董事长。') or lost a
    name of the annotated question; then the annotated original."""
    text = translated.strip().splitlines()[0] if translated.strip() else ""
    text = re.sub(rf"([{HAN}]{{2,}})\s*[（(]\1[)）]", r"\1", text)  # "赵晓光（赵晓光）"
    # A translation that lost the question's Chinese names is worse than the annotated original.
    kept = all(name in text for name in re.findall(r"\(([^)]*)\)", annotated))
    asks = text.endswith(("？", "?"))
    return (text if language(text) == "zh" and kept and asks else annotated), text


def english_answer(draft: str, reply: Reply, content: ContentSet, terms: dict[str, str],
                   question: str = "") -> str | None:
    """The English answer to show, or None when the draft is not English or says more than the checked one."""
    english = strip_markers(draft).strip()
    english = re.sub(r"^[^.!?]*\?\s*", "", english) or english  # the model sometimes repeats the question
    ok = english and language(english) == "en" and faithful(english, reply, content, terms, question)
    return english if ok else None


_JOINERS = {"、": ", ", "，": ", ", ",": ", ", "和": " and ", "与": " and ", "及": " and ", "以及": " and "}
_WHO_IS = re.compile(r"^\s*(?:who|what)\s+(is|are|was|were)\s+(.+?)\s*\?*\s*$", re.IGNORECASE)
# "Who founded 360 Group?": the answer takes the question word's place ("Zhou Hongyi founded 360 Group.").
_WHO_DID = re.compile(r"^\s*who\s+(?!(?:is|are|was|were|do|does|did|will|would|can|could|should|has|have|had)\b)"
                      r"(.+?)\s*\?*\s*$", re.IGNORECASE)


def fallback(answer: str, question: str, terms: dict[str, str]) -> str:
    """The English reply built by code from the checked Chinese answer when no translation passed: its names
    and numbers as the glossary spells them ('The chairman of iFlytek is Liu Qingfeng (刘庆峰).'), framed by
    a who/what-is question; an answer that is more than names keeps its Chinese, the names glossed."""
    source = strip_markers(answer).strip().rstrip("。.！!")
    names = {zh: en for zh, en in terms.items() if not _is_term(en)}
    pattern = "|".join(sorted(map(re.escape, names), key=len, reverse=True))
    pieces = [p for p in (re.split(f"({pattern})", source) if names else [source]) if p]
    if any(p not in names and p.strip() not in _JOINERS and HAN_RUN.search(p) for p in pieces):
        glossed = "; ".join(f"{zh} = {en}" for zh, en in terms.items() if en != zh and zh in source)
        return message("in_content_words", "en", text=source, names=f" ({glossed})" if glossed else "")
    text = "".join((f"{names[p]} ({p})" if is_person(p) and names[p] != p else names[p]) if p in names
                   else _JOINERS.get(p.strip(), p) for p in pieces).strip(" ,")
    if m := _WHO_IS.match(question):
        subject = m.group(2)
        return f"{subject[:1].upper()}{subject[1:]} {m.group(1).lower()} {text}."
    if m := _WHO_DID.match(question):
        return f"{text} {m.group(1)}."
    return text + "."
