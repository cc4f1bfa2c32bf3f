"""Text out of what admins send as content: plain text, Markdown, web pages (HTML), Word (.docx) and PDF.

Every kind comes out as Markdown the content loader reads: `# title`, then `## heading` sections and
paragraphs. Kept libraries do the parsing: trafilatura finds a page's article text and drops menus,
footers and ads (measured on Chinese pages in tests/test_extract.py); python-docx reads Word's paragraphs
and heading styles; pypdf reads a PDF's text layer (a scanned PDF has none and is refused).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import httpx

from bot.errors import ContentError

SUFFIXES = (".txt", ".md", ".html", ".htm", ".docx", ".pdf")
_MIN_CHARS = 20  # less than a sentence: nothing to answer from


@dataclass(frozen=True)
class Extracted:
    """A document's title and its text as Markdown."""

    title: str
    text: str

    @property
    def markdown(self) -> str:
        """The file the content folder keeps: the title as its first heading, then the text."""
        body = self.text.strip()
        first = body.split("\n", 1)[0].lstrip("# ").strip()
        return (body if first == self.title else f"# {self.title}\n\n{body}") + "\n"


def extract(name: str, data: bytes) -> Extracted:
    """The text of a file named `name`; ContentError (saying why, plainly) when there is none to use."""
    suffix = PurePosixPath(name.lower()).suffix
    if suffix not in SUFFIXES:
        raise ContentError(f"{name}: this kind of file is not supported; send {', '.join(SUFFIXES)} or a web link.")
    try:
        if suffix in (".txt", ".md"):
            found = _plain(_decode(data), name)
        elif suffix in (".html", ".htm"):
            found = html_text(_decode(data), name)
        elif suffix == ".docx":
            found = _docx(data, name)
        else:
            found = _pdf(data, name)
    except ContentError:
        raise
    except Exception as exc:  # a damaged file: the parsers raise many kinds
        raise ContentError(f"{name}: the file could not be read ({type(exc).__name__}); is it a valid "
                           f"{suffix[1:].upper()} file?") from exc
    if len(re.sub(r"\s", "", found.text)) < _MIN_CHARS:
        raise ContentError(f"{name}: no text found in it (a scanned PDF or an image has none).")
    return found


def _decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "gb18030"):  # Chinese files not in UTF-8 are mostly GBK
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ContentError("the file is not text in UTF-8 or GBK.")


def _plain(text: str, name: str) -> Extracted:
    text = text.replace("\r\n", "\n").strip()
    first = text.split("\n", 1)[0].lstrip("# ").strip() if text else ""
    return Extracted(first[:120] or PurePosixPath(name).stem, text)


def html_text(page: str, name: str = "") -> Extracted:
    """A web page's article text (menus, footers and ads dropped) and its title."""
    import trafilatura  # imported on first use: about 0.3 s, only admins adding pages pay it

    # Precision first: a menu or an ad taken for content would be answered from. On short pages the
    # default mode kept the navigation links; on long ones both modes found the same text.
    options = {"include_comments": False, "include_tables": True, "favor_precision": True}
    doc = trafilatura.bare_extraction(page, with_metadata=True, **options)
    text = trafilatura.extract(page, output_format="markdown", **options)
    title = (getattr(doc, "title", None) or "").strip() if doc is not None else ""
    return Extracted(title or PurePosixPath(name).stem or "web page", (text or "").strip())


def _docx(data: bytes, name: str) -> Extracted:
    import docx  # python-docx

    document = docx.Document(io.BytesIO(data))
    lines, title = [], (document.core_properties.title or "").strip()
    for p in document.paragraphs:
        text, style = p.text.strip(), (p.style.name if p.style is not None else "")
        if not text:
            continue
        if style == "Title":
            title = title or text
            lines.append(f"# {text}")
        elif m := re.fullmatch(r"Heading (\d)", style):
            lines.append(f"{'#' * min(int(m.group(1)) + 1, 6)} {text}")
        else:
            lines.append(text)
    for table in document.tables:  # tables after the text: their rows as lines
        lines.extend(" | ".join(c.text.strip() for c in row.cells) for row in table.rows)
    return Extracted(title or PurePosixPath(name).stem, "\n\n".join(lines))


def _pdf(data: bytes, name: str) -> Extracted:
    import pypdf

    reader = pypdf.PdfReader(io.BytesIO(data))
    pages = [(page.extract_text() or "").strip() for page in reader.pages]
    title = str((reader.metadata.title if reader.metadata else None) or "").strip()
    # A PDF breaks lines inside paragraphs; a blank line between pages keeps pages apart.
    return Extracted(title or PurePosixPath(name).stem, "\n\n".join(p for p in pages if p))


def page_name(url: str) -> str:
    """A file name for a web page's text, from its address (`example.com/news/a.html` -> `a.html`)."""
    parts = urlsplit(url)
    last = PurePosixPath(parts.path).name or parts.hostname or "page"
    return last if last.lower().endswith((".html", ".htm")) else f"{last}.html"


async def fetch(url: str, max_bytes: int, timeout_s: float = 15.0) -> bytes:
    """Download a web page for `extract`; ContentError with a plain reason when it cannot be had."""
    try:
        scheme = urlsplit(url).scheme
    except ValueError as exc:
        raise ContentError(f"{url} is not a valid web address ({exc}).") from exc
    if scheme not in ("http", "https"):
        raise ContentError(f"{url}: only http and https links can be fetched.")
    try:
        async with (httpx.AsyncClient(timeout=timeout_s, follow_redirects=True) as client,
                    client.stream("GET", url) as r):
            if r.status_code >= 400:
                raise ContentError(f"{url}: the site answered HTTP {r.status_code}; nothing was added.")
            body = bytearray()
            async for chunk in r.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise ContentError(f"{url}: the page is over {max_bytes // 1_000_000} MB (content.max_mb).")
            return bytes(body)
    except httpx.InvalidURL as exc:
        raise ContentError(f"{url} is not a valid web address ({exc}).") from exc
    except httpx.HTTPError as exc:
        raise ContentError(f"{url} could not be fetched ({type(exc).__name__}): this server may have no "
                           "internet access. Send the page as a file (.html, .pdf, .docx, .txt) instead.") from exc
