"""The extractive path (bot/answering/extraction.py, Engine._extract) with the canned-token FakeBackend: routing,
the reply (short answer, the sentence quoted, its citation), declines that show the closest sentence,
the operating point, and what the log keeps."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence

from bot.answering.extraction import core, decision_point, is_open, polar_sense, restates, shown_answer, tidy
from bot.answering.prompts import Prompts
from bot.backends.base import PART, Extraction, Picked, of_conversation
from bot.content.knowledge import load
from bot.errors import BackendBusy
from bot.types import Delta, Progress, Queued, Reply
from tests.fakes.backend import FakeBackend
from tests.helpers import ROOT, ask_msg, bilingual, copying, stream, turns

ARTICLE = load(ROOT / "content")
DECLINE_ZH = Prompts().text("decline_zh")
LIU = next(p for p in ARTICLE.passages if "让每个人都有AI助手" in p.text)


def test_summaries_comparisons_and_opinions_are_open_the_rest_are_facts() -> None:
    for q in ("总结一下这篇文章", "比较刘庆峰和周鸿祎的建议", "两者有什么区别？", "你如何看待ChatGPT？",
              "Summarize the article", "What is the difference between the two proposals?",
              "（用户1）比较一下刘庆峰和周鸿祎", "请你比较刘庆峰和周鸿祎", "刘庆峰和周鸿祎比较起来有什么不一样？",
              "与周鸿祎比较，刘庆峰的建议有什么优势？", "这篇文章是关于什么的？请总结一下", "刘庆峰和周鸿祎相比如何？"):
        assert is_open(q), q
    for q in ("科大讯飞董事长是谁？", "周鸿祎为什么说ChatGPT成为了很多黑客的帮手？",
              "赵晓光认为我国人工智能技术落后吗？", "How many groups did Liu propose?",
              "为什么栖息在400公尺左右的斯氏腔吻鳕个体比较大？", "周鸿祎认为我国能用多长时间达到比较好的跟随水平？",
              "为什么这项工作比较辛苦？", "他为什么被看作比较保守的政治家？", "这种鱼看起来比较大是为什么？",
              "比较常见的症状有哪些？", "穆斯林兄弟会与什么类型的地方政府相比较有能力？"):
        assert not is_open(q), q


def test_a_copied_answer_loses_the_punctuation_at_its_ends_only() -> None:
    assert tidy("，“刘庆峰”。") == "“刘庆峰”" and tidy(" 小批量试制产业联合基金， ") == "小批量试制产业联合基金"
    assert tidy("刘庆峰”") == "刘庆峰" and tidy("《红楼梦") == "红楼梦" and tidy("（北京）") == "（北京）"
    assert tidy("") == ""


async def test_a_fact_is_copied_out_of_the_picked_sentence_and_the_sentence_quoted(engine_for) -> None:
    backend = FakeBackend(copying("AI助手"))
    core, store = await engine_for(backend)
    events = [e async for e in stream(core, ask_msg("刘庆峰希望让每个人都有什么？"))]
    reply = events[-1]
    assert isinstance(reply, Reply) and not reply.refused and reply.path == "extract"
    assert events[0] == Progress("answering")
    sentence = next(s.text for s in ARTICLE.sentences.sentences if "让每个人都有AI助手" in s.text)
    assert reply.text == f"AI助手[1]\n原文[1]：「{sentence}」"
    assert "".join(e.text for e in events if isinstance(e, Delta)) == reply.text  # shown as it is logged
    assert [(c.n, c.id) for c in reply.citations] == [(1, LIU.id)]  # the picked sentence's passage
    assert reply.copied == "AI助手" and reply.sentence == sentence and reply.score is not None
    assert reply.ttft_ms is not None and reply.total_ms >= reply.ttft_ms
    (call,) = backend.calls
    assert call[0]["content"] == Prompts().text("pick_system")
    assert "问题：刘庆峰希望让每个人都有什么？" in call[1]["content"]
    row = turns(store)[-1]
    assert (row["path"], row["refused"]) == ("extract", 0) and row["score"] == reply.score
    assert set(json.loads(row["signals"])) >= {"margin", "copy_vs_none", "copy_mean"}
    assert "[copy from" in row["draft"] and "AI助手" in row["draft"]


async def test_none_of_the_candidates_declines_with_the_closest_sentence_cited(engine_for) -> None:
    core, store = await engine_for(FakeBackend(copying("这句话不在文章里")))
    reply = await core.ask(ask_msg("刘庆峰的年薪是多少？"))
    assert reply.refused and reply.path == "extract"
    assert reply.text.startswith("文章中没有直接说明") and "最接近的内容是：「" in reply.text
    assert reply.text.endswith("[1]")
    assert reply.citations and reply.citations[0].text and reply.sentence in reply.text
    assert reply.decline_reason.startswith("pick: score")
    assert turns(store)[-1]["decline_reason"].startswith("pick:")


async def test_the_operating_point_decides_and_pick_off_answers_every_extraction(engine_for) -> None:
    core, _ = await engine_for(FakeBackend(copying("AI助手")))
    core.engine.cfg.grounding.answer_threshold = 1.0  # nothing is that sure
    strict = await core.ask(ask_msg("刘庆峰希望让每个人都有什么？", "a"))
    assert strict.refused and "AI助手" in strict.text  # the decline still shows the sentence holding it
    core.engine.cfg.grounding.rules_off = ["pick"]
    loose = await core.ask(ask_msg("刘庆峰希望让每个人都有什么？", "b"))
    assert not loose.refused and loose.text.startswith("AI助手[1]")


async def test_a_question_no_sentence_shares_a_word_with_never_reaches_the_model(engine_for) -> None:
    backend = FakeBackend(copying("AI助手"))
    core, _ = await engine_for(backend)
    reply = await core.ask(ask_msg("量子纠缠的原理是什么？"))
    assert reply.refused and reply.text == DECLINE_ZH and backend.calls == []


async def test_a_subject_the_content_never_names_is_for_the_model_to_judge(engine_for) -> None:
    # 文心一言 is nowhere in the article, but 公司 and 开发 are: no word list declines it before the model
    # runs (paraphrase defeats such lists both ways); the model is asked, and here it says none.
    backend = FakeBackend(copying("没有这句"))
    core, _ = await engine_for(backend)
    reply = await core.ask(ask_msg("文心一言是哪家公司开发的？"))
    assert reply.refused and reply.path == "extract" and len(backend.calls) == 1


async def test_an_open_question_takes_the_free_draft_with_its_checks(engine_for) -> None:
    n = LIU.order + 1
    backend = FakeBackend(f"刘庆峰建议加快推进我国认知智能大模型建设。[{n}]")
    core, _ = await engine_for(backend)
    reply = await core.ask(ask_msg("刘庆峰和周鸿祎的建议有什么不同？"))
    assert reply.path == "draft" and backend.calls  # drafted, then checked (this draft names only one of the two)
    assert not backend.calls[0][-1]["content"].startswith("句子：") and backend.calls[0][0]["content"].startswith(
        "你是一个问答助手")


async def test_an_english_question_is_extracted_in_chinese_and_answered_in_english(engine_for) -> None:
    script = copying("AI助手", free="What does Liu Qingfeng hope everyone will have?")
    answers = bilingual("hope", "刘庆峰希望让每个人都有什么？", "AI助手", "An AI assistant")

    def both(messages: list[dict[str, str]]) -> str:
        last = messages[-1]["content"]
        return script(messages) if last.startswith("句子：") else answers(messages)

    core, _ = await engine_for(FakeBackend(both))
    events = [e async for e in stream(core, ask_msg("What does Liu Qingfeng hope everyone will have?"))]
    reply = events[-1]
    assert isinstance(reply, Reply) and not reply.refused and reply.path == "extract"
    assert reply.text.startswith("An AI assistant[1]") and "\n原文[1]：「" in reply.text and "AI助手" in reply.text
    assert [e.step for e in events if isinstance(e, Progress)] == [
        "translating_question", "answering", "translating_answer"]


def test_a_tag_or_courtesy_around_a_question_is_not_part_of_it() -> None:
    assert core("赵晓光是哪个研究所的研究员？（用户1第2问）") == "赵晓光是哪个研究所的研究员？"
    assert core("【用户3】刘庆峰是谁？谢谢！") == "刘庆峰是谁？"
    assert core("ChatGPT（聊天机器人）是哪家公司的？") == "ChatGPT（聊天机器人）是哪家公司的？"
    assert core("刘庆峰是谁") == "刘庆峰是谁"


async def test_a_tag_with_numbers_the_content_uses_changes_nothing(engine_for) -> None:
    # 1 and 2 stand in the article; a tag's numbers must not count as the question's own.
    backend = FakeBackend(copying("中国科学院自动化研究所"))
    core_, _ = await engine_for(backend)
    plain = await core_.ask(ask_msg("赵晓光是哪个研究所的研究员？", "p"))
    tagged = await core_.ask(ask_msg("赵晓光是哪个研究所的研究员？（用户1第2问）", "t"))
    assert not plain.refused and (tagged.text, tagged.score) == (plain.text, plain.score)
    assert backend.calls[0][1]["content"] == backend.calls[1][1]["content"]  # the same pick prompt


def test_the_decision_is_made_as_soon_as_its_signals_are_known() -> None:
    assert decision_point(("margin", "gap")) == "pick"
    assert decision_point(("margin", "copy_vs_none")) == "first"
    assert decision_point(("margin", "copy_vs_none", "copy_mean")) == "end"


async def test_a_decline_on_the_first_copied_token_copies_nothing_more(engine_for) -> None:
    # The shipped weights read the copy's first token: a declined extraction stops right there.
    backend = FakeBackend(copying("AI助手"))
    core_, _ = await engine_for(backend)
    core_.engine.cfg.grounding.answer_threshold = 1.0
    reply = await core_.ask(ask_msg("刘庆峰希望让每个人都有什么？"))
    assert reply.refused and reply.copied == "AI"  # one piece read, then the request was closed


def test_a_bare_yes_or_no_word_is_told_apart_from_an_answer() -> None:
    senses = [polar_sense(a) for a in ("是", "没有[1]", "也是", "并不是", "是的。", "有过", "是台湾第一部", "日本", "")]
    assert senses == ["yes", "no", "yes", "no", "yes", "yes", "", "", ""]


def test_a_copy_the_question_already_holds_is_told_apart_from_an_answer() -> None:
    asked = "（用户1第2问）哈佛体育场位于哪里？谢谢"
    assert restates("哈佛体育场", asked) and restates("体育场[1]", asked)
    assert not restates("波士顿", asked) and not restates("哈佛体育场在波士顿", asked) and not restates("", asked)
    sentence = "哈佛体育场位于波士顿。"
    assert shown_answer("哈佛体育场", sentence, asked) == sentence
    assert shown_answer("波士顿", sentence, asked) == "波士顿"
    assert shown_answer("是", sentence, "哈佛体育场在波士顿吗？") == sentence


def _says(word: str):
    """A script that picks the first candidate and copies `word` out of it, whatever the question."""
    return lambda messages: f"1：{word}" if messages[-1]["content"].startswith("句子：") else ""


async def test_a_copy_that_is_only_a_yes_shows_the_sentence_instead(engine_for) -> None:
    # The model copies 是 for "no" questions too: the sentence, not its lean, answers (and a bare 是 answers
    # no other question either).
    core_, _ = await engine_for(FakeBackend(_says("是")))
    core_.engine.cfg.grounding.rules_off = ["pick"]  # answered whatever its score
    reply = await core_.ask(ask_msg("ChatGPT本质上是不是人工智能预训练大模型？", "yn"))
    assert not reply.refused and reply.copied == "是" and "是" in reply.sentence
    assert reply.text == reply.sentence + "[1]"  # the sentence is the answer; no quote repeats it
    asked = await core_.ask(ask_msg("ChatGPT本质上是什么？", "wh"))
    assert asked.copied == "是" and asked.text == asked.sentence + "[1]"


async def test_a_copy_that_only_restates_the_question_shows_the_sentence_instead(engine_for) -> None:
    # "刘庆峰" copied for a question about 刘庆峰 answers nothing: the sentence does.
    core_, _ = await engine_for(FakeBackend(_says("刘庆峰")))
    core_.engine.cfg.grounding.rules_off = ["pick"]  # answered whatever its score
    reply = await core_.ask(ask_msg("刘庆峰认为我们需要什么？", "re"))
    assert not reply.refused and reply.copied == "刘庆峰" and "刘庆峰" in reply.sentence
    assert reply.text == reply.sentence + "[1]"


async def test_judged_each_candidate_is_asked_alone_and_the_one_judged_yes_is_copied_from(engine_for) -> None:
    backend = FakeBackend(copying("AI助手"))
    core, _ = await engine_for(backend, pick="judged")
    reply = await core.ask(ask_msg("刘庆峰希望让每个人都有什么？"))
    assert not reply.refused and reply.text.startswith("AI助手[1]") and reply.copied == "AI助手"
    assert len(backend.calls) == core.engine.cfg.grounding.candidates  # one short prompt per candidate
    judged = [call[1]["content"].removeprefix("句子：").split("\n", 1)[0] for call in backend.calls]
    assert all(call[0]["content"] == Prompts().text("judge_system") for call in backend.calls)
    assert len(set(judged)) == len(judged) and reply.sentence in judged and "AI助手" in reply.sentence
    assert reply.signals["gap"] > 0  # the 是 of the sentence holding it over the runner-up's


async def test_judged_no_candidate_judged_yes_declines_with_the_closest_sentence(engine_for) -> None:
    core, _ = await engine_for(FakeBackend(copying("这句话不在文章里")), pick="judged")
    reply = await core.ask(ask_msg("刘庆峰的年薪是多少？"))
    assert reply.refused and reply.path == "extract" and reply.text.startswith("文章中没有直接说明")
    assert reply.sentence and reply.sentence in reply.text and reply.decline_reason.startswith("pick: score")


async def test_judged_parts_run_under_their_turns_conversation(engine_for) -> None:
    backend = FakeBackend(copying("AI助手"), delay=0.01)
    core, _ = await engine_for(backend, pick="judged")
    keys: list[str] = []
    extract = backend.extract

    def spy(*args: object, **kw: str) -> AsyncIterator[str | Queued | Picked]:
        keys.append(kw["conversation"])
        return extract(*args, **kw)

    backend.extract = spy
    msg = ask_msg("刘庆峰希望让每个人都有什么？")
    await core.ask(msg)
    assert len(set(keys)) == len(keys) == core.engine.cfg.grounding.candidates
    assert all(of_conversation(k, msg.conversation_key) and k != msg.conversation_key for k in keys)


class FailingPart(FakeBackend):
    """Judged parts that read their labels and copy slowly, but for the second, which fails first."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: list[str] = []
        self.closed: list[str] = []

    async def extract(self, messages: list[dict[str, str]], labels: Sequence[str], sources: Sequence[str], *,
                      conversation: str, result: Extraction, **kw: object) -> AsyncIterator[str | Picked]:
        self.opened.append(conversation)
        try:
            if conversation.endswith(PART + "1"):
                raise BackendBusy("3 requests queued (model.queue_limit)")
            await asyncio.sleep(0.01)
            result.logprobs = [-3.0, -0.1]
            yield Picked((-3.0, -0.1), 1)
            for piece in "AI助手":
                await asyncio.sleep(0.05)
                yield piece
        finally:
            self.closed.append(conversation)


async def test_judged_a_part_that_fails_fails_the_turn_and_leaves_no_request_open(engine_for) -> None:
    backend = FailingPart()
    core, _ = await engine_for(backend, pick="judged")
    reply = await core.ask(ask_msg("刘庆峰希望让每个人都有什么？"))
    assert reply.error.startswith("BackendBusy") and not reply.copied  # said busy, nothing half-judged answered
    assert len(backend.opened) == core.engine.cfg.grounding.candidates
    assert sorted(backend.closed) == sorted(backend.opened)  # the parts still running were stopped
