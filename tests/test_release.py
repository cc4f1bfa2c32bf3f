"""bot/answering/release.py: a draft is shown one checked sentence at a time."""

from __future__ import annotations

from bot.answering.release import Release, whole_sentences


def feed_all(release: Release, pieces: list[str]) -> list[str]:
    shown = [release.feed(p) for p in pieces]
    return [s for s in [*shown, release.finish()] if s]


def test_nothing_is_shown_before_a_sentence_ends_and_passes() -> None:
    checked: list[str] = []
    release = Release(lambda prefix: checked.append(prefix) or True)
    assert release.feed("科大讯飞") == "" and release.feed("董事长是刘庆峰") == ""
    assert checked == []
    assert release.feed("。") == ""  # a marker may still follow the full stop
    assert release.feed("[3]") == ""
    assert release.feed("他") == "科大讯飞董事长是刘庆峰。[1]"  # renumbered to display order
    assert checked == ["科大讯飞董事长是刘庆峰。[3]"]
    assert release.finish() == "他"
    assert release.shown == "科大讯飞董事长是刘庆峰。[3]他"


def test_a_failing_sentence_and_everything_after_it_stays_hidden() -> None:
    release = Release(lambda prefix: "杭州" not in prefix)
    shown = feed_all(release, ["刘庆峰是董事长。", "他毕业于杭州。", "后来创业。", "完"])
    assert shown == ["刘庆峰是董事长。"]
    assert release.shown == "刘庆峰是董事长。"
    assert release.raw.endswith("完")


def test_a_prefix_that_fails_alone_can_pass_once_the_draft_grows() -> None:
    # "多少" needs a number: the first sentence alone fails, the whole draft passes.
    release = Release(lambda prefix: any(c.isdigit() for c in prefix))
    shown = feed_all(release, ["野驴跑得很快。", "最高每小时70公里。"])
    assert "".join(shown) == "野驴跑得很快。最高每小时70公里。"


def test_a_failed_prefix_is_checked_once_not_for_every_token() -> None:
    calls: list[str] = []
    release = Release(lambda prefix: calls.append(prefix) is None and False)
    feed_all(release, ["甲。", "乙", "丙", "丁", "戊"])
    assert calls.count("甲。") == 1


def test_a_marker_split_over_pieces_stays_with_its_sentence() -> None:
    checked: list[str] = []
    release = Release(lambda prefix: checked.append(prefix) or True)
    shown = feed_all(release, ["刘庆峰是董事长。", "[", "3", "]", "他"])
    assert checked[0] == "刘庆峰是董事长。[3]" and shown[0] == "刘庆峰是董事长。[1]"


def test_a_line_announcing_a_list_is_no_sentence() -> None:
    release = Release(lambda prefix: True)
    assert release.feed("原因主要有以下几点：\n") == "" and release.feed("1. 缺少激励") == ""
    assert release.feed("。") == "" and release.feed("\n") == "原因主要有以下几点：\n1. 缺少激励。"


def test_whole_sentences_end_at_a_full_stop_in_either_language() -> None:
    assert whole_sentences("刘庆峰是董事长。[1]他认为应当加快") == "刘庆峰是董事长。[1]"
    assert whole_sentences("The museum opens at 9 [1]. It closes at 5 and on Mon") == "The museum opens at 9 [1]."
    assert whole_sentences("It grew 3.5 times") == ""
    assert whole_sentences("没有句末的半句话") == ""
