"""bot/grounding/citations.py: [n] markers read, stripped and renumbered while streaming; citations chosen."""

from __future__ import annotations

import pytest

from bot.content.knowledge import ContentSet, load
from bot.grounding.citations import cite
from bot.text.markers import MarkerRenumber, markers, strip_markers, without_quote
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def content() -> ContentSet:
    return load(ROOT / "content")


def test_markers_and_strip_markers() -> None:
    assert markers("a[3]b【12】c[3]") == [3, 12]
    assert strip_markers("刘庆峰[1]。") == "刘庆峰。"


def test_cite_renumbers_to_display_order_and_keeps_only_supporting_passages(content: ContentSet) -> None:
    twelve, three = content.passages[11], content.passages[2]
    text, citations = cite("周鸿祎认为[12]是拐点[3]，也像发电厂[12][5]。", [twelve, three], content)
    assert text == "周鸿祎认为[1]是拐点[2]，也像发电厂[1]。"
    assert [(c.id, c.n) for c in citations] == [(twelve.id, 1), (three.id, 2)]


def test_cite_marks_an_answer_whose_markers_name_no_supporting_passage(content: ContentSet) -> None:
    three = content.passages[2]
    text, citations = cite("周鸿祎认为是拐点[7]。", [three], content)
    assert text == "周鸿祎认为是拐点[1]。"
    assert [(c.id, c.section, c.text, c.n) for c in citations] == [(three.id, three.section, three.text, 1)]


def test_marker_renumber_across_split_pieces() -> None:
    r = MarkerRenumber()
    shown = [r.feed(p) for p in ("周鸿祎认为", "[", "1", "2]", "是拐点", "[", "3]", "，也像发电厂[1", "2]。")]
    out = "".join(shown) + r.flush()
    assert out == "周鸿祎认为[1]是拐点[2]，也像发电厂[1]。"
    assert r.order == [12, 3]
    # An unfinished marker is held back, not shown half.
    assert shown[1] == "" and shown[2] == ""


def test_marker_renumber_fullwidth_and_non_markers() -> None:
    r = MarkerRenumber()
    out = r.feed("见【7】和[7]，") + r.feed("[注意这不是一个编号]") + r.feed("以及[x]") + r.flush()
    assert out == "见[1]和[1]，[注意这不是一个编号]以及[x]"
    r = MarkerRenumber()
    assert r.feed("结尾[") == "结尾"
    assert r.flush() == "["


def test_the_quoted_source_line_comes_off_an_answer_and_nothing_else_does() -> None:
    assert without_quote("董事长是刘庆峰。[1]\n原文[1]：「科大讯飞董事长刘庆峰认为。」") == "董事长是刘庆峰。[1]"
    assert without_quote("第一行。\n第二行「引语」。") == "第一行。\n第二行「引语」。"
