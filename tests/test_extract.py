"""bot/content/files.py: text and title out of .txt, .md, .html, .docx and .pdf, and how well web pages come out.

The web-page measurement builds Chinese news pages from the shipped article's paragraphs, wrapped in the
boilerplate of a real site (menu, related links, comments, an ad, the footer), and checks that every
paragraph comes out and none of the boilerplate does. A plain text dump of the same page keeps all
eleven pieces of boilerplate.
"""

from __future__ import annotations

import html
import io
import re

import docx
import lxml.html
import pytest
from matplotlib.figure import Figure

from bot.content.files import extract, html_text, page_name
from bot.errors import ContentError
from tests.helpers import ROOT

ARTICLE = [p.strip() for p in (ROOT / "content" / "article.txt").read_text(encoding="utf-8").split("\n")
           if len(p.strip()) > 30]
BOILERPLATE = ["首页", "新闻中心", "科技频道", "财经", "登录", "注册", "热门推荐：华为发布新款手机，销量创新高",
               "相关阅读：人工智能十大趋势盘点", "版权所有 © 2023 某某新闻网 京ICP备12345678号",
               "网友评论：这篇文章写得很好，支持国产大模型！", "广告：点击领取免费课程"]


def news_page(paragraphs: list[str]) -> str:
    nav = " | ".join(f'<a href="/{i}">{b}</a>' for i, b in enumerate(BOILERPLATE[:6]))
    side = "".join(f'<li><a href="/r{i}">{b}</a></li>' for i, b in enumerate(BOILERPLATE[6:8]))
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    return (f"<html><head><title>对标ChatGPT的自主产品能否跟上 - 某某新闻网</title></head><body><nav>{nav}</nav>"
            f"<div class='main'><h1>对标ChatGPT的自主产品能否跟上</h1><div class='content'>{body}</div></div>"
            f"<aside><ul>{side}</ul></aside><div class='comments'><p>{BOILERPLATE[9]}</p></div>"
            f"<div class='ad'>{BOILERPLATE[10]}</div><footer>{BOILERPLATE[8]}</footer></body></html>")


def squeeze(text: str) -> str:
    return re.sub(r"\s", "", text)


@pytest.mark.parametrize("n", [2, 8, len(ARTICLE)], ids=["short page", "medium page", "whole article"])
def test_a_chinese_news_page_gives_its_article_and_none_of_the_boilerplate(n: int) -> None:
    page = news_page(ARTICLE[:n])
    found = html_text(page, "news.html")
    kept = sum(squeeze(p) in squeeze(found.text) for p in ARTICLE[:n])
    junk = [b for b in BOILERPLATE if squeeze(b) in squeeze(found.text)]
    dump = lxml.html.fromstring(page).text_content()
    print(f"\n{n} paragraphs: {kept} kept, {len(junk)} of {len(BOILERPLATE)} boilerplate pieces kept "
          f"(plain text dump: {sum(squeeze(b) in squeeze(dump) for b in BOILERPLATE)})")
    assert kept == n and junk == [], junk
    assert found.title == "对标ChatGPT的自主产品能否跟上"


def test_markdown_and_plain_text_keep_their_headings() -> None:
    found = extract("a.md", "# 标题\n\n## 一节\n\n科大讯飞总部位于安徽合肥，成立于1999年。".encode())
    assert found.title == "标题" and found.markdown.startswith("# 标题\n\n## 一节")
    gbk = extract("b.txt", "讯飞简介\n\n科大讯飞总部位于安徽合肥，成立于1999年。".encode("gb18030"))  # not UTF-8
    assert gbk.title == "讯飞简介" and gbk.markdown == "讯飞简介\n\n科大讯飞总部位于安徽合肥，成立于1999年。\n"


def test_a_word_document_keeps_its_title_headings_and_tables() -> None:
    document = docx.Document()
    document.add_heading("讯飞简介", 0)
    document.add_heading("总部", 1)
    document.add_paragraph("科大讯飞总部位于安徽合肥，成立于1999年。")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "员工", "约一万五千人"
    data = io.BytesIO()
    document.save(data)
    found = extract("讯飞.docx", data.getvalue())
    assert found.title == "讯飞简介"
    assert found.markdown == ("# 讯飞简介\n\n## 总部\n\n科大讯飞总部位于安徽合肥，成立于1999年。\n\n"
                              "员工 | 约一万五千人\n")


def test_a_pdf_gives_the_text_of_its_pages() -> None:
    fig = Figure(figsize=(6, 2))
    fig.text(0.05, 0.5, "The museum opens at nine and closes at five every day.")
    data = io.BytesIO()
    fig.savefig(data, format="pdf", metadata={"Title": "Museum hours"})
    found = extract("hours.pdf", data.getvalue())
    assert found.title == "Museum hours" and "opens at nine" in found.text


def test_files_without_usable_text_say_why() -> None:
    with pytest.raises(ContentError, match="not supported"):
        extract("a.exe", b"MZ")
    with pytest.raises(ContentError, match="no text found"):
        extract("a.txt", b"   ")
    with pytest.raises(ContentError, match="could not be read"):
        extract("a.pdf", b"%PDF-1.4 cut short")


def test_a_page_gets_a_file_name_from_its_address() -> None:
    assert page_name("https://example.org/news/a.html?x=1") == "a.html"
    assert page_name("https://example.org/news/123") == "123.html"
    assert page_name("https://example.org/") == "example.org.html"
