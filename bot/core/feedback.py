"""Readers' ratings and the admins' gaps as commands: /rate (the buttons under an answer), /good, /bad,
/gaps; a reply to a 👎's question (its reason); the re-asking of a gap's questions after content is added."""

from __future__ import annotations

import asyncio
import logging
import re

from bot.core import gaps
from bot.core.capabilities import Report, Services
from bot.text import phrases
from bot.types import Choice, Incoming, Notice

log = logging.getLogger(__name__)
REASON = "reason"  # a reply to the message asking why a 👎: its reason
GAPS = "gaps"  # a reply to a /gaps list: content for those topics
NUMBER = re.compile(r"\d{1,12}", re.ASCII)  # a turn id as typed (isdigit() takes "²", which int() refuses)
RATINGS = {"up": 1, "down": -1, "clear": 0}  # /rate N up|down|clear (clear: a withdrawn rating)


def buttons(turn_id: int, lang: str) -> tuple[Choice, ...]:
    """👍 / 👎 under an answer: each presses `/rate N up|down`."""
    return (Choice(phrases.message("rate_up", lang), f"/rate {turn_id} up"),
            Choice(phrases.message("rate_down", lang), f"/rate {turn_id} down"))


async def _rated(services: Services, msg: Incoming, turn_id: int | None, rating: int, reason: str,
                 lang: str) -> str | Notice:
    """Record the rating; a 👎 without a reason asks for one (a reply to this notice)."""
    if turn_id is None or not await services.rate(msg, turn_id, rating, reason):
        return phrases.message("nothing_to_rate", lang)
    if rating >= 0:
        return phrases.message("rated_up" if rating else "rating_withdrawn", lang)
    if reason.strip():
        return phrases.message("rated_down_reason", lang)
    if not msg.replies:  # no reply to a question can be told apart from a new message here
        return phrases.message("rated_down_command", lang)
    if msg.group:  # a question to the whole group for one reader's reason: a mention it cannot make
        return phrases.message("rated_down_group", lang)
    return Notice(phrases.message("rated_down", lang), expects=(REASON, turn_id))


async def rate(services: Services, msg: Incoming, args: str, lang: str, progress: Report) -> str | Notice:
    """`/rate N up|down [reason]`: what the buttons under answer N send."""
    words = args.split(maxsplit=2)
    if len(words) < 2 or not NUMBER.fullmatch(words[0]) or words[1] not in RATINGS:
        return phrases.message("rate_usage", lang)
    reason = words[2] if len(words) > 2 else ""
    return await _rated(services, msg, int(words[0]), RATINGS[words[1]], reason, lang)


async def good(services: Services, msg: Incoming, args: str, lang: str, progress: Report) -> str | Notice:
    """`/good`: 👍 for the conversation's last answer."""
    return await _rated(services, msg, await services.last_answer(msg.conversation_key), 1, "", lang)


async def bad(services: Services, msg: Incoming, args: str, lang: str, progress: Report) -> str | Notice:
    """`/bad [reason]`: 👎 for the conversation's last answer, with its reason or a question for one."""
    return await _rated(services, msg, await services.last_answer(msg.conversation_key), -1, args, lang)


async def reason(services: Services, msg: Incoming, args: str, lang: str, progress: Report) -> str | Notice:
    """A reply to the question a 👎 asked (`msg.regarding`): the reason for it."""
    kept = msg.regarding is not None and await services.rating_reason(int(msg.regarding[1]), msg, msg.text)
    return phrases.message("reason_kept" if kept else "nothing_to_rate", lang)


def days_of(args: str, default: float) -> float:
    """`/gaps [DAYS]`: at most a year."""
    word = args.strip()
    return min(float(word), 366.0) if re.fullmatch(r"\d{1,4}(\.\d+)?", word, re.ASCII) and float(word) > 0 else default


async def show(services: Services, msg: Incoming, args: str, lang: str, progress: Report) -> str | Notice:
    """`/gaps [DAYS]` (admins): the topics the content did not answer, most asked first, with a chart; a
    reply with a document or a link adds content for them."""
    if msg.group:  # every reader's questions and reasons: not for a group to read
        return phrases.message("gaps_private", lang)
    days = days_of(args, services.gaps_config.days)
    topics = await services.gaps(days)
    hint = "gaps_hint" if msg.replies else "gaps_hint_cli" if msg.channel == "cli" else "gaps_hint_send"
    text = gaps.report(topics, days, lang, hint=hint)
    if not topics:
        return text
    image = await asyncio.to_thread(gaps.chart, topics, f"Gaps, last {days:g} days")
    return Notice(text, image=image, expects=(GAPS, gaps.questions_of(topics)))


async def subscribe(services: Services, msg: Incoming, args: str, lang: str, progress: Report) -> str | Notice:
    """`/digest [on|off]` (admins): opt in to the gaps digest, or out; without a word, how it stands."""
    cfg, word = services.gaps_config, args.strip().lower()
    if word in ("on", "off"):
        await services.subscribe(msg, word == "on")
    if cfg.digest == "off":
        return phrases.message("digest_disabled", lang)
    day = phrases.message(f"day_{cfg.day}", lang) if cfg.digest == "weekly" else phrases.message("every_day", lang)
    state = "digest_on" if msg.user_id in await services.subscribers(msg.channel) else "digest_off"
    return phrases.message(state, lang, when=f"{day} {cfg.hour}:00")


async def reasked(services: Services, questions: list[str], lang: str, progress: Report) -> str:
    """After content was added for a gap: its questions asked again, how many are answered now."""
    progress("reasking", None)
    questions = questions[:gaps.MAX_REASKED]  # each one a model run, queued with the readers' questions
    try:
        replies = await services.reask(questions)
    except Exception as exc:  # the content is in; only the check of it failed
        log.warning("re-asking %d gap questions failed", len(questions), exc_info=True)
        return phrases.message("reask_failed", lang, reason=f"{type(exc).__name__}: {exc}"[:200])
    answered = [r is not None and not r.refused and not r.error for r in replies]
    lines = [phrases.message("reasked", lang, n=len(replies), answered=sum(answered))]
    for question, reply, ok in zip(questions, replies, answered, strict=True):
        shown = reply.text.splitlines()[0] if reply is not None and reply.text else ""
        lines.append(f"✓ {question} → {shown[:60]}" if ok else f"✗ {question}")
    return "\n".join(lines)
