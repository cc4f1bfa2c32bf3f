"""Content: loading and cleaning files, splitting them into labelled passages, retrieval, and atomic reload.

Retrieval is BM25 over jieba words plus character bigrams (pure Python): the content is small, it needs
no index on disk, and bigrams cover the two-character words SQLite's trigram tokenizer cannot match.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pypinyin import lazy_pinyin

from bot.content.retrieval import Bm25, SentenceIndex, idf_weights
from bot.errors import ContentError
from bot.text import sentences
from bot.text.words import HAN_RUN, content_bigrams, latin_names, numbers, posseg, terms
from bot.types import Passage, ReloadReport

log = logging.getLogger(__name__)

SUFFIXES = (".txt", ".md")
ALIASES = "aliases.yaml"
MAX_PASSAGE_CHARS = 360

# Web-page furniture that content copied from news sites carries, often glued onto real lines.
_INLINE_JUNK = [
    re.compile(r"返回搜狐[,，]?\s*查看更多"),
    re.compile(r"\s*阅读原文\s*$"),
]
_LINE_JUNK = [
    re.compile(r"^\d+(\s+\d+){1,3}$"),  # view / like / comment counters
    re.compile(r"^.{0,30}\d+\s*(年|个月|天|小时|分钟)前\s*[(（]?\d{0,4}[)）]?\s*发布.*$"),  # "1年前 (2023)发布 site"
    re.compile(r"^(原标题|责任编辑|本版统筹|声明|免责声明)[:：/].*$"),
    re.compile(r"^(©|（c）|\(c\)).*$", re.IGNORECASE),
    re.compile(r"^(版权声明|相关文章|相关阅读|推荐阅读|热门推荐|阅读原文|分享到|点赞|收藏)\s*$"),
]
# Everything after these lines is the site's footer, not the document.
_FOOTER_START = re.compile(r"^(©\s*版权声明|相关文章|相关阅读|推荐阅读)\s*$")
_HEADING_END = re.compile(r"[。！？!?；;，,：:”\"]$")


@dataclass(frozen=True)
class ContentSet:
    """One loaded version of the content: passages in order, a BM25 index over them, and the tables the
    grounding checks derive from the text, all built once by `load` and swapped together on reload."""

    version: str
    title: str
    passages: tuple[Passage, ...]
    sources: tuple[str, ...]
    index: Bm25 = field(repr=False, compare=False)
    # Lower-cased other-language spelling -> the content's term (from aliases.yaml).
    aliases: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    # The content's term -> its first listed spelling, as written (for translating answers).
    alias_names: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    # Every passage's section and text, lower-cased, one passage a line (where question terms are looked up).
    whole: str = field(default="", repr=False, compare=False)
    # Toneless pinyin of every 2-4 character Chinese sequence of the texts -> the sequence ('liuqingfeng' -> 刘庆峰).
    pinyin: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    # IDF of the content bigrams over the passages (section + text): rarer question words weigh more.
    bigram_idf: dict[str, float] = field(default_factory=dict, repr=False, compare=False)
    # Names of people and organisations in the content (see `named_entities`).
    entities: frozenset[str] = field(default_factory=frozenset, repr=False, compare=False)
    # Numbers and Latin-script names anywhere in the content (a question's own must be in the cited text).
    anchors: frozenset[str] = field(default_factory=frozenset, repr=False, compare=False)
    # Each file's path in the folder -> its title (the first line), as /content lists them.
    documents: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    # Every sentence with BM25 over them: what the extractive path picks from.
    sentences: SentenceIndex = field(default_factory=lambda: SentenceIndex(()), repr=False, compare=False)

    def by_id(self, passage_id: str) -> Passage | None:
        """The passage with this id, if it exists in this version."""
        return next((p for p in self.passages if p.id == passage_id), None)

    def retrieve(self, query: str, k: int) -> list[tuple[Passage, float]]:
        """The k passages that best match `query`, best first, with their scores."""
        scored = self.index.scores(terms(query))
        ranked = sorted(range(len(scored)), key=lambda i: -scored[i])[:k]
        return [(self.passages[i], scored[i]) for i in ranked if scored[i] > 0]

    @property
    def text_chars(self) -> int:
        """Characters of passage text in this version."""
        return sum(len(p.text) for p in self.passages)


def clean(text: str) -> str:
    """Strip web-page furniture (counters, 'back to site' links, copyright footers) by pattern."""
    out: list[str] = []
    for raw in text.replace("\r\n", "\n").replace("\u3000", " ").split("\n"):
        line = raw.strip()
        if _FOOTER_START.match(line):
            break
        for pat in _INLINE_JUNK:
            line = pat.sub("", line).strip()
        if line and any(p.match(line) for p in _LINE_JUNK):
            continue
        out.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def _is_heading(line: str, md_level: int) -> bool:
    if md_level:
        return True
    return len(line) <= 40 and not _HEADING_END.search(line) and "。" not in line


def _split_long(text: str) -> list[str]:
    if len(text) <= MAX_PASSAGE_CHARS:
        return [text]
    chunks, cur = [], ""
    for sentence in (s for s in sentences.PASSAGE_BREAK.split(text) if s):
        if cur and len(cur) + len(sentence) > MAX_PASSAGE_CHARS:
            chunks.append(cur)
            cur = ""
        cur += sentence
    if cur:
        chunks.append(cur)
    return [c.strip() for c in chunks if c.strip()]


def split_passages(text: str, source: str) -> tuple[str, list[tuple[str, str]]]:
    """Return (title, [(section, passage text)]): headings become the section label of what follows."""
    lines = [ln for ln in text.split("\n")]
    title = ""
    section: list[str] = []
    heading_open = False
    out: list[tuple[str, str]] = []
    for line in lines:
        if not line:
            continue
        md = re.match(r"^(#{1,6})\s+(.*)$", line)
        content = md.group(2).strip() if md else line
        if not title:
            title = content
            continue
        if _is_heading(content, len(md.group(1)) if md else 0):
            section = (section + [content]) if heading_open else [content]
            heading_open = True
            continue
        heading_open = False
        label = " ".join(section) or title
        out.extend((label, chunk) for chunk in _split_long(content))
    return title or source, out


def passage_id(text: str) -> str:
    """A stable id: the same text always gets the same id, across reloads and restarts."""
    return "p" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


def load(directory: Path, max_mb: float = 5.0) -> ContentSet:
    """Load every .txt/.md file under `directory` into a new ContentSet, or raise ContentError."""
    if not directory.is_dir():
        raise ContentError(f"content folder {directory} does not exist; fix: create it or set content.dir.")
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
    if not files:
        raise ContentError(f"no .txt or .md files in {directory}; fix: add the article there.")
    # Checked before reading: a file dropped in by mistake (a dump, a log) would take minutes to index and
    # hours for the model to read.
    try:
        total = sum(f.stat().st_size for f in files)
    except OSError as exc:  # a file removed while the folder was being listed
        raise ContentError(f"the content in {directory} changed while it was read ({exc}); fix: reload again.") from exc
    if total > max_mb * 1_000_000:
        biggest = max(files, key=lambda f: f.stat().st_size)
        raise ContentError(f"the content in {directory} is {total / 1e6:.1f} MB ({biggest.name}: "
                           f"{biggest.stat().st_size / 1e6:.1f} MB), over content.max_mb ({max_mb:g}); fix: "
                           "remove what does not belong, or raise content.max_mb.")
    digest = hashlib.sha256()
    passages: list[Passage] = []
    titles: list[str] = []
    documents: dict[str, str] = {}
    seen: set[str] = set()
    for f in files:
        try:
            text = clean(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ContentError(f"cannot read {f}: {exc}; fix: save it as UTF-8 text.") from exc
        rel = str(f.relative_to(directory))
        digest.update(rel.encode() + b"\0" + text.encode() + b"\0")
        title, parts = split_passages(text, rel)
        titles.append(title)
        documents[rel] = title
        for section, body in parts:
            pid = passage_id(body)
            if pid in seen:  # the same paragraph twice adds nothing to retrieve or cite
                continue
            seen.add(pid)
            passages.append(Passage(pid, section, body, rel, len(passages)))
    if not passages:
        raise ContentError(f"the files in {directory} have no text left after cleaning; fix: check their content.")
    aliases, alias_names = load_aliases(directory / ALIASES)
    digest.update(repr(sorted(aliases.items())).encode())
    content = _content_set(digest.hexdigest()[:12], titles[0], passages, files, aliases, alias_names)
    content.documents.update(documents)
    return content


def _content_set(version: str, title: str, passages: list[Passage], files: list[Path], aliases: dict[str, str],
                 alias_names: dict[str, str]) -> ContentSet:
    """The ContentSet with its retrieval index and the tables the grounding checks read."""
    texts = [p.section + p.text for p in passages]
    joined = "".join(texts)
    # Aliases with a capitalised spelling are names (iFlytek); lower-case ones are terms (chairman).
    proper = tuple(term for term, spelling in alias_names.items() if spelling[:1].isupper())
    return ContentSet(
        version, title, tuple(passages), tuple(str(f) for f in files),
        index=Bm25([terms(p.section + " " + p.text) for p in passages]),
        aliases=aliases,
        alias_names=alias_names,
        whole="\n".join(p.section + " " + p.text for p in passages).lower(),
        pinyin=pinyin_index("\n".join(p.text for p in passages)),
        bigram_idf=idf_weights([set(content_bigrams(t)) for t in texts]),
        entities=named_entities("\n".join(texts), proper),
        anchors=frozenset(numbers(joined) | latin_names(joined)),
        sentences=SentenceIndex(passages),
    )


def pinyin_index(text: str) -> dict[str, str]:
    """Toneless pinyin (no spaces) of every 2-4 character Chinese sequence, e.g. 'liuqingfeng' -> 刘庆峰."""
    index: dict[str, str] = {}
    for run in HAN_RUN.findall(text):
        syllables = lazy_pinyin(run)
        if len(syllables) != len(run):
            continue
        for n in (2, 3, 4):
            for i in range(len(run) - n + 1):
                index.setdefault("".join(syllables[i : i + n]).lower(), run[i : i + n])
    return index


_SPEECH = re.compile(r"(?=(认为|表示|建议|介绍|指出|谈到|看来|提到|注意到))")


def named_entities(text: str, extra: tuple[str, ...]) -> frozenset[str]:
    """Names of people and organisations in the content: recurring speakers (the two or three characters
    before 认为/表示/建议…), words the segmenter tags as person or organisation names, and `extra`."""
    found: set[str] = set(extra)
    for m in _SPEECH.finditer(text):
        for size in (3, 2):
            name = text[max(0, m.start() - size) : m.start()]
            if len(name) == size and HAN_RUN.fullmatch(name) and text.count(name) >= 3:
                found.add(name)
                break
    for run in HAN_RUN.findall(text):
        found.update(w for w, flag in posseg(run) if flag in ("nr", "nt") and len(w) >= 2 and text.count(w) >= 2)
    return frozenset(found)


def load_aliases(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Read `term: [other spellings]` pairs into (spelling -> term, term -> first spelling)."""
    if not path.exists():
        return {}, {}
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ContentError(f"{path}: not valid YAML ({exc}); fix the line shown.") from exc
    if not isinstance(raw, dict):
        raise ContentError(f"{path}: expected 'term: [spelling, ...]' lines; fix the file's layout.")
    out: dict[str, str] = {}
    names: dict[str, str] = {}
    for term, spellings in raw.items():
        if not isinstance(spellings, list) or not spellings or not all(isinstance(s, str | int) for s in spellings):
            raise ContentError(f"{path}: '{term}' must map to a list like [iFlytek, iFLYTEK]; fix that entry.")
        names[str(term)] = str(spellings[0])
        for s in spellings:
            out[str(s).lower()] = str(term)
    return out, names


def diff(old: ContentSet, new: ContentSet, error: str | None = None) -> ReloadReport:
    """Passages added, removed and changed (same source, section and position, new text) between versions."""
    old_ids = {p.id for p in old.passages}
    new_ids = {p.id for p in new.passages}

    def slots(cs: ContentSet, ids: set[str]) -> dict[tuple[str, str, int], str]:
        counts: Counter[tuple[str, str]] = Counter()
        out = {}
        for p in cs.passages:
            key = (p.source, p.section)
            if p.id in ids:
                out[(p.source, p.section, counts[key])] = p.id
            counts[key] += 1
        return out

    gone = slots(old, old_ids - new_ids)
    came = slots(new, new_ids - old_ids)
    changed = len(set(gone) & set(came))
    return ReloadReport(ok=True, version=new.version, previous_version=old.version,
                        added=len(came) - changed, removed=len(gone) - changed, changed=changed,
                        passages=len(new.passages))


class Knowledge:
    """The content currently served; `prepare()` loads a new version, which the caller then serves."""

    def __init__(self, directory: Path, max_mb: float = 5.0) -> None:
        self.directory, self.max_mb = directory, max_mb
        self.current = load(directory, max_mb)

    def prepare(self) -> tuple[ReloadReport, ContentSet | None]:
        """Load the folder again without serving it yet: (report, new content, or None on failure)."""
        old = self.current
        try:
            new = load(self.directory, self.max_mb)
        except ContentError as exc:
            log.warning("content reload failed, keeping version %s: %s", old.version, exc)
            return ReloadReport(ok=False, version=old.version, previous_version=old.version,
                                passages=len(old.passages), error=str(exc)), None
        return diff(old, new), new
