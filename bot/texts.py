"""Fixed texts users see (help, limits, errors), in Chinese and English. Model prompts live in prompts/."""

from __future__ import annotations

import re

from bot.words import HAN

_CJK = re.compile(f"[{HAN}]")


def language(text: str) -> str:
    """'zh' when the text has Chinese characters, else 'en'."""
    return "zh" if _CJK.search(text) else "en"


MESSAGES: dict[str, dict[str, str]] = {
    "too_long": {
        "zh": "问题太长了（最多 {limit} 个字符），请缩短后再问。",
        "en": "That question is too long (at most {limit} characters); please shorten it.",
    },
    "empty": {"zh": "请输入一个关于文章的问题。", "en": "Please type a question about the article."},
    "rate_limited": {
        "zh": "提问太频繁了，请 {seconds} 秒后再试。",
        "en": "You are asking too fast; please try again in {seconds} s.",
    },
    "not_allowed": {
        "zh": "抱歉，此机器人未向你开放。",
        "en": "Sorry, this bot is not open to you.",
    },
    "admin_only": {
        "zh": "抱歉，这个命令只对管理员开放。",
        "en": "Sorry, that command is for administrators only.",
    },
    "text_only": {"zh": "目前只能回答文字消息。", "en": "I can only answer text messages."},
    "apology": {
        "zh": "抱歉，处理你的问题时出错了，请稍后再试。",
        "en": "Sorry, something went wrong while answering. Please try again later.",
    },
    "log_unavailable": {
        "zh": "暂时无法记录问题（日志数据库不可写），因此暂不回答；请几分钟后再试。",
        "en": "I cannot keep a record of questions right now (the log database takes no writes), so I am not "
              "answering; please try again in a few minutes.",
    },
    # Under an answer whose draft reached model.max_tokens: its unfinished last sentence was dropped.
    "cut_short": {
        "zh": "\n（回答较长，只保留了完整的前几句。）",
        "en": "\n(A long answer: only its complete first sentences are kept.)",
    },
    "reset": {"zh": "好的，已清空对话记录。", "en": "Done: the conversation has been reset."},
    "no_sources": {
        "zh": "上一个回答没有引用任何段落。",
        "en": "The last answer did not cite any passage.",
    },
    "queued": {
        "zh": "前面还有 {n} 个问题在排队，请稍候……",
        "en": "You are number {n} in the queue; please wait…",
    },
    "thinking": {"zh": "正在思考……", "en": "Thinking…"},
    "restarting": {"zh": "机器人正在重启，稍后会回答你的问题。",
                   "en": "The bot is restarting; your answer follows shortly."},
    # The cited sentence under a Chinese answer, in the content's own words (grounding.quote_source);
    # English answers get none.
    "source_quote": {"zh": "\n原文[{n}]：「{sentence}」"},
    # What a hidden step is doing (bot.types.Progress): nothing unchecked is shown meanwhile.
    "progress_translating_question": {"zh": "正在理解问题……", "en": "Reading your question…"},
    "progress_answering": {"zh": "正在查找原文……", "en": "Looking for the answer in the text…"},
    "progress_rechecking": {"zh": "正在重新核对原文……", "en": "Checking the source passages again…"},
    "progress_translating_answer": {"zh": "正在翻译回答……", "en": "Checked; writing it in English…"},
    "unknown_command": {
        "zh": "未知命令 {command}。发送 /help 查看可用命令。",
        "en": "Unknown command {command}. Send /help for the list.",
    },
    "greeting": {"zh": "你好！", "en": "Hello!"},
    "group_hint": {
        "zh": "在群里：@我、回复我的消息，或用 /ask 问题 来提问。\n",
        "en": "In groups: mention me, reply to one of my messages, or use /ask <question>.\n",
    },
}

# The command menu a messenger shows next to the input field (Telegram's setMyCommands): command -> description.
MENU: dict[str, str] = {
    "ask": "Ask a question about the article",
    "help": "What I know and how to ask",
    "reset": "Forget this conversation",
    "sources": "The passages behind the last answer",
}


def message(key: str, lang: str, **kwargs: object) -> str:
    """A fixed message in the user's language."""
    return MESSAGES[key][lang if lang in ("zh", "en") else "en"].format(**kwargs)


_HELP = {
    "zh": (
        "我只根据下面这篇文章回答问题，并注明出处；文章没有提到的内容我会直说。\n"
        "{about}\n\n"
        "命令：\n"
        "/help  显示本帮助\n"
        "/reset  清空对话记录\n"
        "/sources  显示上一个回答引用的原文段落\n"
    ),
    "en": (
        "I answer questions only from the article below and cite the passages I used; "
        "when the article does not say, I tell you so.\n"
        "{about}\n\n"
        "Commands:\n"
        "/help  show this help\n"
        "/reset  forget this conversation\n"
        "/sources  show the passages behind the last answer\n"
    ),
}
_ADMIN_HELP = {
    "zh": "管理员命令：\n/reload  重新加载内容并报告变化\n/stats  统计（轮次、用户、拒答、延迟）\n",
    "en": "Admin commands:\n/reload  reload the content and report what changed\n"
    "/stats  turns, users, declines and latency\n",
}


# Lines of /help that only one channel needs: how to leave the terminal, how to ask in a group.
_CHANNEL_HINTS: dict[str, dict[str, str]] = {
    "cli": {"zh": "/quit  退出\n", "en": "/quit  leave\n"},
    "telegram": MESSAGES["group_hint"],
}


def channel_hint(channel: str, lang: str) -> str:
    """The channel's own /help lines ("" for none)."""
    hints = _CHANNEL_HINTS.get(channel, {})
    return hints.get(lang if lang in ("zh", "en") else "en", "")


def help_text(lang: str, about: str, *, admin: bool = False, extra: str = "") -> str:
    """The /help text; `extra` adds channel-specific lines (e.g. the CLI's /quit)."""
    lang = lang if lang in _HELP else "en"
    text = _HELP[lang].format(about=about) + extra
    return text + ("\n" + _ADMIN_HELP[lang] if admin else "")
