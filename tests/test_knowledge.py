"""bot/content/knowledge.py: cleaning, passages and sections, stable ids, versions, retrieval, atomic reload."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.content.knowledge import Bm25, ContentSet, Knowledge, clean, idf_weights, load, passage_id
from bot.errors import ContentError
from bot.types import ReloadReport

ROOT = Path(__file__).resolve().parent.parent
CONTENT = ROOT / "content"

LIU_QUOTE = "在别人的院子里建大楼"
POWER_PLANT = "发电厂"


@pytest.fixture
def content_copy(tmp_path: Path) -> Path:
    """A private copy of the shipped content folder (article + aliases) to edit."""
    d = tmp_path / "content"
    shutil.copytree(CONTENT, d)
    return d


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} must occur exactly once"
    path.write_text(text.replace(old, new), encoding="utf-8")


# ---- clean() -------------------------------------------------------------------------------------


def test_clean_strips_the_articles_furniture(article_text: str) -> None:
    # The raw article really has all of these; otherwise this test would prove nothing.
    for junk in ("返回搜狐,查看更多", "419 0 0", "ChatGPT游戏1年前 (2023)发布 一起用AI", "© 版权声明", "相关文章",
                 "责任编辑:"):
        assert junk in article_text
    text = clean(article_text)
    assert "返回搜狐" not in text and "查看更多" not in text
    assert not re.search(r"^419 0 0$", text, re.M)
    assert "1年前 (2023)发布" not in text and "一起用AI" not in text
    assert "版权声明" not in text and "©" not in text
    assert "相关文章" not in text
    assert "责任编辑" not in text
    assert "原标题" not in text
    assert "本版统筹" not in text


def test_clean_keeps_the_articles_text(article_text: str) -> None:
    text = clean(article_text)
    assert text.startswith("对标ChatGPT的自主产品能否跟上\n")
    assert LIU_QUOTE in text
    assert "ChatGPT像一个发电厂,烧了石油" in text
    # The last real paragraph survives, including the reporters' byline before the glued link.
    assert "推动场景应用从“样板间”向“商品房”转变" in text
    assert "本版文/本报记者 张月朦 张知依 佟晓宇 蒋若静" in text


def test_clean_strips_junk_glued_onto_real_lines_by_pattern() -> None:
    raw = ("标题\n"
           "记者 王五报道返回搜狐，查看更多\n"
           "正文第一段。返回搜狐, 查看更多\n"
           "12 3 4\n"
           "某网站3天前发布 科技频道\n"
           "责任编辑：李四\n"
           "（c）2023 某网站\n"
           "2023年发布的报告说用户破亿。\n")
    text = clean(raw)
    assert text.split("\n") == ["标题", "记者 王五报道", "正文第一段。", "2023年发布的报告说用户破亿。"]


def test_everything_after_the_footer_start_is_dropped() -> None:
    raw = "标题\n\n正文。\n\n相关文章\n\n另一篇无关文章的标题\n推荐的别的内容。\n"
    assert clean(raw) == "标题\n\n正文。"
    raw = "标题\n\n正文。\n\n© 版权声明\n\n文章版权归作者所有。\n"
    assert clean(raw) == "标题\n\n正文。"


def test_clean_normalises_line_endings_and_blank_runs() -> None:
    assert clean("标题\r\n\r\n\r\n\r\n正文。\r\n") == "标题\n\n正文。"


# ---- passages, sections, ids, versions -----------------------------------------------------------


def test_passages_keep_their_section_labels() -> None:
    cs = load(CONTENT)
    assert cs.title == "对标ChatGPT的自主产品能否跟上"
    liu = [p for p in cs.passages if LIU_QUOTE in p.text]
    assert len(liu) == 1
    assert "全国人大代表刘庆峰" in liu[0].section
    plant = next(p for p in cs.passages if POWER_PLANT in p.text)
    assert plant.section == "它对整个产业会产生巨大影响"
    zhao = next(p for p in cs.passages if p.text.startswith("全国政协委员、中国科学院自动化研究所研究员"))
    assert "全国政协委员赵晓光" in zhao.section
    # No heading line became a passage of its own, and no furniture did either.
    assert not any(p.text in ("全国人大代表刘庆峰", "419 0 0") for p in cs.passages)
    assert [p.order for p in cs.passages] == list(range(len(cs.passages)))
    assert all(p.source == "article.txt" for p in cs.passages)


def test_a_two_line_heading_becomes_one_label() -> None:
    cs = load(CONTENT)
    p = next(p for p in cs.passages if p.text.startswith("刘庆峰指出"))
    assert p.section == "我国现有大模型智能水平 与ChatGPT仍有显著差距"


def test_passage_ids_are_stable_and_depend_only_on_the_text(content_copy: Path) -> None:
    a, b = load(CONTENT), load(CONTENT)
    assert [p.id for p in a.passages] == [p.id for p in b.passages]
    assert len({p.id for p in a.passages}) == len(a.passages)
    # A copy elsewhere (other path) has the same ids and the same version.
    c = load(content_copy)
    assert [p.id for p in c.passages] == [p.id for p in a.passages]
    assert c.version == a.version
    # Equal text -> equal id; the id is not positional.
    p = a.passages[3]
    assert passage_id(p.text) == p.id
    assert passage_id(p.text + "。") != p.id


def test_the_same_paragraph_in_two_files_is_one_passage(tmp_path: Path) -> None:
    d = tmp_path / "c"
    d.mkdir()
    (d / "a.txt").write_text("甲文\n\n共同的一段话，出现在两个文件里。\n\n甲独有的段落。\n", encoding="utf-8")
    (d / "b.txt").write_text("乙文\n\n共同的一段话，出现在两个文件里。\n\n乙独有的段落。\n", encoding="utf-8")
    cs = load(d)
    texts = [p.text for p in cs.passages]
    assert texts.count("共同的一段话，出现在两个文件里。") == 1
    assert len(texts) == 3


def test_content_version_changes_with_the_text(content_copy: Path) -> None:
    before = load(content_copy).version
    assert load(content_copy).version == before
    edit(content_copy / "article.txt", "在别人的院子里建大楼", "在别人的院子里盖大楼")
    after = load(content_copy).version
    assert after != before
    # The aliases are part of what is served, so they are part of the version too.
    (content_copy / "aliases.yaml").write_text("科大讯飞: [iFlytek]\n", encoding="utf-8")
    assert load(content_copy).version not in (before, after)


def test_long_paragraphs_are_split_at_sentence_ends(tmp_path: Path) -> None:
    d = tmp_path / "c"
    d.mkdir()
    paragraph = "".join(f"这是第{i}个用来测试切分的句子，它本身并不太长。" for i in range(40))
    (d / "long.txt").write_text("标题\n\n小节\n\n" + paragraph + "\n", encoding="utf-8")
    cs = load(d)
    assert len(cs.passages) > 1
    assert all(len(p.text) <= 400 for p in cs.passages)
    assert all(p.text.endswith("。") for p in cs.passages)
    assert "".join(p.text for p in cs.passages) == paragraph
    assert {p.section for p in cs.passages} == {"小节"}


def test_markdown_headings_become_sections(tmp_path: Path) -> None:
    d = tmp_path / "md"
    d.mkdir()
    (d / "notes.md").write_text(
        "# 产品手册\n\n## 安装\n\n先运行安装命令，再检查版本。\n\n## 使用方法\n\n### 提问\n\n"
        "输入问题后按回车键即可得到回答。\n\n第二段也属于提问这一节。\n", encoding="utf-8")
    cs = load(d)
    assert cs.title == "产品手册"
    got = [(p.section, p.text) for p in cs.passages]
    assert got == [
        ("安装", "先运行安装命令，再检查版本。"),
        ("使用方法 提问", "输入问题后按回车键即可得到回答。"),
        ("使用方法 提问", "第二段也属于提问这一节。"),
    ]
    assert all(not p.text.startswith("#") for p in cs.passages)


# ---- retrieval -----------------------------------------------------------------------------------


def test_retrieval_finds_the_power_plant_passage() -> None:
    cs = load(CONTENT)
    top = [p for p, _ in cs.retrieve("周鸿祎把ChatGPT比作什么", 2)]
    # The engine's second attempt quotes the top two passages: the answer must be among them.
    assert any(POWER_PLANT in p.text for p in top), [p.text[:30] for p in top]
    assert all("周鸿祎" in p.section + p.text for p in top)
    # A query with the passage's own words ranks it first.
    best, score = cs.retrieve("ChatGPT烧了石油产生电力", 3)[0]
    assert POWER_PLANT in best.text and score > 0


def test_retrieval_ranks_by_the_question_and_omits_non_matches() -> None:
    cs = load(CONTENT)
    best = cs.retrieve("科大讯飞董事长", 3)[0][0]
    assert "科大讯飞董事长刘庆峰" in best.text
    scores = [s for _, s in cs.retrieve("赵晓光 成果转化", 5)]
    assert scores == sorted(scores, reverse=True)
    assert cs.retrieve("zzzqqq", 5) == []


def test_idf_weights_rank_rare_terms_higher() -> None:
    weights = idf_weights([{"a", "b"}, {"a"}, {"a", "c"}])
    assert weights["b"] == weights["c"] > weights["a"] > 0
    docs = [["a", "b", "a"], ["a"]]
    assert Bm25(docs).idf == idf_weights([set(d) for d in docs])


def test_load_builds_the_grounding_tables_once_per_version(content_copy: Path) -> None:
    cs = load(content_copy)
    assert cs.pinyin["liuqingfeng"] == "刘庆峰" and cs.pinyin["zhouhongyi"] == "周鸿祎"
    assert {"刘庆峰", "周鸿祎", "赵晓光", "江浩然"} <= cs.entities
    assert {"chatgpt", "openai", "360"} <= cs.anchors
    assert "chatgpt" in cs.whole and "ChatGPT" not in cs.whole
    assert cs.bigram_idf["发电"] > cs.bigram_idf["人工"] > 0
    edit(content_copy / "article.txt", "在别人的院子里建大楼", "在别人的院子里建摩天楼")
    new = load(content_copy)
    assert "摩天" in new.bigram_idf and "摩天" in new.whole and new.pinyin["motian"] == "摩天"
    assert "摩天" not in cs.bigram_idf and "motian" not in cs.pinyin  # the old version's tables are untouched


def test_by_id() -> None:
    cs = load(CONTENT)
    p = cs.passages[5]
    assert cs.by_id(p.id) == p
    assert cs.by_id("pnotthere") is None


# ---- load errors ---------------------------------------------------------------------------------


def test_load_errors_say_why(tmp_path: Path) -> None:
    with pytest.raises(ContentError, match="does not exist"):
        load(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ContentError, match=r"no \.txt or \.md files"):
        load(empty)
    (empty / "only.txt").write_text("返回搜狐,查看更多\n419 0 0\n", encoding="utf-8")
    with pytest.raises(ContentError, match="no text left"):
        load(empty)


# ---- Knowledge.prepare() (a reload) ---------------------------------------------------------------


def _reload(k: Knowledge) -> tuple[ReloadReport, ContentSet | None]:
    """Prepare the folder again and, when it loaded, serve it as the engine does: (report, new content)."""
    report, new = k.prepare()
    if new is not None:
        k.current = new
    return report, new


def _reload_broken(folder: Path, breaks: Callable[[Path], object]) -> str:
    """Load the folder, break it, reload: the old content must keep serving. Returns the error."""
    k = Knowledge(folder)
    old_version, old_count = k.current.version, len(k.current.passages)
    breaks(folder)
    report, new = k.prepare()
    assert report.ok is False
    assert new is None
    assert report.version == old_version
    assert report.previous_version == old_version
    assert k.current.version == old_version
    assert len(k.current.passages) == old_count
    # Still serving: retrieval works on the old content.
    assert any(LIU_QUOTE in p.text for p, _ in k.current.retrieve("刘庆峰 院子 大楼", 3))
    assert "Reload failed" in report.summary()
    assert report.error is not None
    return report.error


def _empty(folder: Path) -> None:
    for f in folder.iterdir():
        f.unlink()


@pytest.mark.parametrize(
    ("breaks", "needles"),
    [
        (_empty, ["no .txt or .md files"]),
        (lambda d: (d / "article.txt").rename(d / "article.pdf"), ["no .txt or .md files"]),
        (shutil.rmtree, ["does not exist"]),
        (lambda d: (d / "broken.txt").write_bytes("标题\n\n正文".encode("gbk") + b"\xff\xfe\x81"),
         ["broken.txt", "UTF-8"]),
    ],
    ids=["empty folder", "no text files", "deleted folder", "undecodable file"],
)
def test_a_failed_reload_keeps_the_old_content(content_copy: Path, breaks: Callable[[Path], object],
                                                needles: list[str]) -> None:
    error = _reload_broken(content_copy, breaks)
    assert all(n in error for n in needles)


@pytest.mark.parametrize(
    ("aliases", "needle"),
    [
        ("科大讯飞: [iFlytek, \n", "not valid YAML"),
        ("- 科大讯飞\n- iFlytek\n", "term: [spelling"),
        ("科大讯飞: iFlytek\n", "'科大讯飞'"),
    ],
)
def test_reload_with_malformed_aliases_keeps_the_old_content(content_copy: Path, aliases: str, needle: str) -> None:
    error = _reload_broken(content_copy, lambda d: (d / "aliases.yaml").write_text(aliases, encoding="utf-8"))
    assert "aliases.yaml" in error and needle in error


def test_after_a_failed_reload_a_fixed_folder_loads(content_copy: Path) -> None:
    k = Knowledge(content_copy)
    version = k.current.version
    saved = (content_copy / "article.txt").read_bytes()
    (content_copy / "article.txt").unlink()
    (content_copy / "aliases.yaml").rename(content_copy / "aliases.bak")
    report, new = k.prepare()
    assert report.ok is False and new is None
    (content_copy / "article.txt").write_bytes(saved)
    (content_copy / "aliases.bak").rename(content_copy / "aliases.yaml")
    report, new = _reload(k)
    assert report.ok and new is not None and new.version == version
    assert report.version == version


def test_reload_without_changes(content_copy: Path) -> None:
    k = Knowledge(content_copy)
    report, new = _reload(k)
    assert report.ok and new is not None and new.version == report.previous_version
    assert (report.added, report.removed, report.changed) == (0, 0, 0)
    assert report.version == report.previous_version
    assert report.passages == len(k.current.passages)
    assert "unchanged" in report.summary()


def test_reload_reports_one_changed_paragraph(content_copy: Path) -> None:
    k = Knowledge(content_copy)
    old = k.current
    old_liu = next(p for p in old.passages if LIU_QUOTE in p.text)
    edit(content_copy / "article.txt", "在别人的院子里建大楼", "在别人的院子里盖大楼")
    report, new = k.prepare()
    assert k.current is old  # prepared, not served yet
    assert report.ok and new is not None and new.version != old.version
    k.current = new
    assert (report.added, report.removed, report.changed) == (0, 0, 1)
    assert report.previous_version == old.version and report.version == k.current.version != old.version
    assert report.passages == len(old.passages)
    new_liu = next(p for p in k.current.passages if "在别人的院子里盖大楼" in p.text)
    assert new_liu.id != old_liu.id
    # Every other passage kept its id.
    assert {p.id for p in old.passages} - {old_liu.id} == {p.id for p in k.current.passages} - {new_liu.id}
    assert "1 changed" in report.summary() and k.current.version in report.summary()


def test_reload_reports_added_passages_of_a_new_file(content_copy: Path) -> None:
    k = Knowledge(content_copy)
    old_count = len(k.current.passages)
    (content_copy / "extra.md").write_text(
        "# 附录\n\n## 甲节\n\n第一段新内容。\n\n第二段新内容。\n\n## 乙节\n\n第三段新内容。\n", encoding="utf-8")
    old_version = k.current.version
    report, new = _reload(k)
    assert report.ok and new is not None and new.version != old_version
    assert (report.added, report.removed, report.changed) == (3, 0, 0)
    assert report.passages == old_count + 3 == len(k.current.passages)
    assert {p.source for p in k.current.passages} == {"article.txt", "extra.md"}


def test_reload_reports_a_removed_paragraph(content_copy: Path) -> None:
    k = Knowledge(content_copy)
    old_count = len(k.current.passages)
    gone = next(p for p in k.current.passages if p.text.startswith("同时,要以生态建设为支撑"))
    edit(content_copy / "article.txt", gone.text + "\n", "")
    old_version = k.current.version
    report, new = _reload(k)
    assert report.ok and new is not None and new.version != old_version
    assert (report.added, report.removed, report.changed) == (0, 1, 0)
    assert report.passages == old_count - 1
    assert k.current.by_id(gone.id) is None


def test_reload_reports_a_removed_file(content_copy: Path) -> None:
    (content_copy / "extra.txt").write_text("附录\n\n独立的一段。\n\n另一段。\n", encoding="utf-8")
    k = Knowledge(content_copy)
    (content_copy / "extra.txt").unlink()
    old_version = k.current.version
    report, new = _reload(k)
    assert report.ok and new is not None and new.version != old_version
    assert (report.added, report.removed, report.changed) == (0, 2, 0)
