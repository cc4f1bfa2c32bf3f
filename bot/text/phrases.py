"""Fixed texts users see (help, limits, errors), in Chinese and English. Model prompts live in prompts/."""

from __future__ import annotations

import re

from bot.text.words import HAN
from bot.types import Progress, Reply

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
    # An English reply whose translation failed its check: the checked Chinese answer, its names glossed.
    "in_content_words": {"en": "In the content's own words: {text}{names}."},
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
    # A stream WeCom no longer takes (its 6-minute limit): the answer follows as a message of its own.
    "continued": {"zh": "（回答较慢，将以新消息发送。）",
                  "en": "(This is taking a while; the answer follows in a new message.)"},
    "lost_in_restart": {"zh": "机器人刚刚重启，这个回答没能接上，请重新提问。",
                        "en": "The bot restarted and this answer was lost; please ask again."},
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
    "progress_extracting": {"zh": "正在读取文档……", "en": "Reading the document…"},
    "progress_fetching": {"zh": "正在下载网页……", "en": "Downloading the page…"},
    "progress_reading_content": {"zh": "模型正在阅读新内容……", "en": "The model is reading the new content…"},
    "progress_reasking": {"zh": "正在重新提问这些缺口的问题……", "en": "Asking the gap's questions again…"},
    "unknown_command": {
        "zh": "未知命令 {command}。发送 /help 查看可用命令。",
        "en": "Unknown command {command}. Send /help for the list.",
    },
    "greeting": {"zh": "你好！", "en": "Hello!"},
    # Content from the chat (admins): a document or a web link, a preview, then Confirm or Cancel.
    "preview": {
        "zh": "预览：《{title}》\n文件：{name}（{chars} 个字符，{passages} 个段落）\n{change}\n"
              "确认后重新加载内容；新内容就绪前，旧内容照常回答。",
        "en": "Preview: “{title}”\nFile: {name} ({chars} characters, {passages} passages)\n{change}\n"
              "On confirm the content is reloaded; the old content answers until the new one is ready.",
    },
    "preview_adds": {"zh": "这是新文档。", "en": "This adds a new document."},
    "preview_replaces": {"zh": "将替换现有的 {name}（{old} 个段落）。", "en": "This replaces {name} ({old} passages)."},
    "preview_remove": {
        "zh": "将删除文档 {name}：《{title}》（{passages} 个段落），然后重新加载内容。",
        "en": "This removes {name}: “{title}” ({passages} passages), then reloads the content.",
    },
    "confirm": {"zh": "确认 / Confirm", "en": "Confirm / 确认"},
    "cancel": {"zh": "取消 / Cancel", "en": "Cancel / 取消"},
    "reply_with": {"zh": "{label}：回复 {command}", "en": "{label}: reply {command}"},
    "cancelled": {"zh": "已取消，内容没有改变。", "en": "Cancelled; the content is unchanged."},
    "proposal_gone": {
        "zh": "这个确认已失效（超过 10 分钟、已处理过，或不是你发起的），内容没有改变。",
        "en": "That confirmation is no longer valid (over 10 minutes old, already answered, or not yours); "
              "the content is unchanged.",
    },
    "no_such_document": {
        "zh": "没有名为 {name} 的文档。现有文档：{names}",
        "en": "There is no document named {name}. The documents: {names}",
    },
    "last_document": {
        "zh": "{name} 是唯一的文档，删除后将无内容可答；请先添加新文档。",
        "en": "{name} is the only document; without it there is nothing to answer from. Add another first.",
    },
    "content_not_added": {"zh": "没有添加：{reason}", "en": "Nothing was added: {reason}"},
    "content_unchanged": {"zh": "内容没有改变：{reason}", "en": "The content is unchanged: {reason}"},
    "admin_files_only": {
        "zh": "只有管理员可以发送文件来添加内容；有问题请直接用文字提问。",
        "en": "Only admins can add content by sending files; please ask your question as text.",
    },
    "documents": {"zh": "内容中的文档（{n} 个）：", "en": "Documents in the content ({n}):"},
    "document_line": {"zh": "• {name}：《{title}》，{passages} 个段落",
                      "en": "• {name}: “{title}”, {passages} passages"},
    "remove_usage": {"zh": "用法：/remove 文件名（见 /content）", "en": "Usage: /remove NAME (see /content)"},
    "add_usage": {
        "zh": "发送文件（.txt .md .html .docx .pdf）或 /add 网址 来添加内容。",
        "en": "Send a file (.txt .md .html .docx .pdf) or /add URL to add content.",
    },
    "rate_up": {"zh": "👍", "en": "👍"},
    "rate_down": {"zh": "👎", "en": "👎"},
    "rated_up": {"zh": "谢谢反馈！已记录 👍。", "en": "Thanks! Recorded 👍."},
    "rating_withdrawn": {"zh": "评价已撤回。", "en": "Rating withdrawn."},
    "rated_down": {
        "zh": "已记录 👎。哪里不对？回复这条消息写一句原因（可选）。",
        "en": "Recorded 👎. What was wrong? Reply to this message with one line (optional).",
    },
    "rated_down_group": {"zh": "已记录 👎。", "en": "Recorded 👎."},
    "rated_down_command": {
        "zh": "已记录 👎。想说明原因，请发送 /bad 原因。",
        "en": "Recorded 👎. To say why, send /bad followed by the reason.",
    },
    "rated_down_reason": {"zh": "已记录 👎 和原因，谢谢！", "en": "Recorded 👎 with your reason. Thanks!"},
    "reason_kept": {"zh": "原因已记录，谢谢！", "en": "Reason recorded. Thanks!"},
    "nothing_to_rate": {
        "zh": "没有可以评价的回答（先提一个问题）。", "en": "There is no answer to rate yet (ask a question first).",
    },
    "rate_usage": {"zh": "用法：/good 或 /bad [原因]，评价上一个回答。",
                   "en": "Usage: /good or /bad [reason], for the last answer."},
    "no_gaps": {"zh": "最近 {days} 天没有拒答或被点 👎 的问题。",
                "en": "No question was declined or rated 👎 in the last {days} days."},
    "gaps_heading": {
        "zh": "最近 {days} 天内容没能回答的问题：{asked} 次，{topics} 个主题（问得最多的在前）：",
        "en": "Questions the content did not answer in the last {days} days: {asked}, in {topics} topics "
              "(most asked first):",
    },
    "gap_reason": {"zh": "（👎：{reason}）", "en": " (👎: {reason})"},
    "gap_closest": {"zh": " — 最接近：「{sentence}」", "en": " — closest: “{sentence}”"},
    "gap_nothing_close": {"zh": " — 内容中没有相近的句子", "en": " — nothing close in the content"},
    "gaps_more": {"zh": "……另有 {n} 个主题", "en": "… and {n} more topics"},
    "gaps_hint": {
        "zh": "回复这条消息发送文件或网址即可补充内容（可写编号，如 1），确认后我会重新回答这些问题。",
        "en": "Reply to this message with a file or a link to add content (a number such as 1 picks a topic); "
              "once confirmed I ask those questions again.",
    },
    "gaps_hint_send": {
        "zh": "30 分钟内发送文件或网址即可为这些主题补充内容，确认后我会重新回答这些问题。",
        "en": "Send a file or a link within 30 minutes to add content for these topics; once confirmed I ask "
              "those questions again.",
    },
    "gaps_private": {"zh": "/gaps 会列出所有读者的问题，请在与我的私聊中使用。",
                     "en": "/gaps lists every reader's questions: use it in a private chat with me."},
    "reask_failed": {"zh": "重新提问没有完成：{reason}", "en": "The questions could not be asked again: {reason}"},
    "gaps_hint_cli": {
        "zh": "用 /add 文件路径 [编号] 补充内容（编号如 1，不写则全部），确认后我会重新回答这些问题。",
        "en": "Add content with /add PATH [numbers] (such as 1; none: all listed); once confirmed I ask those "
              "questions again.",
    },
    "reasked": {
        "zh": "重新提问这些缺口的 {n} 个问题：现在能回答 {answered} 个。",
        "en": "Asked the gap's {n} questions again: {answered} now answered.",
    },
    "digest_hint": {"zh": "发送 /gaps 查看详情；回复那条消息发送文件或网址即可补充内容。",
                    "en": "Send /gaps for the list; reply to it with a file or a link to add content."},
    "digest_disabled": {"zh": "缺口摘要未开启（配置 gaps.digest: off）。",
                        "en": "The gaps digest is off (config gaps.digest: off)."},
    "digest_on": {"zh": "你已订阅缺口摘要：{when}（/digest off 退订）。",
                  "en": "You get the gaps digest: {when} (/digest off to stop)."},
    "digest_off": {"zh": "你没有订阅缺口摘要（{when}；/digest on 订阅）。",
                   "en": "You do not get the gaps digest ({when}; /digest on to get it)."},
    "every_day": {"zh": "每天", "en": "daily at"},
    **{f"day_{d}": {"zh": "每周" + z, "en": e} for d, z, e in zip(
        ("mon", "tue", "wed", "thu", "fri", "sat", "sun"), "一二三四五六日",
        ("Mondays at", "Tuesdays at", "Wednesdays at", "Thursdays at", "Fridays at", "Saturdays at",
         "Sundays at"), strict=True)},
    "digest_heading": {"zh": "本期内容缺口摘要（{period}）", "en": "Content gaps digest ({period})"},
    "group_hint": {
        "zh": "在群里：@我、回复我的消息，或用 /ask 问题 来提问。\n",
        "en": "In groups: mention me, reply to one of my messages, or use /ask <question>.\n",
    },
}

def message(key: str, lang: str, **kwargs: object) -> str:
    """A fixed message in the user's language."""
    return MESSAGES[key][lang if lang in ("zh", "en") else "en"].format(**kwargs)


_HELP = {
    "zh": "我只根据下面这篇文章回答问题，并注明出处；文章没有提到的内容我会直说。\n{about}\n\n命令：\n",
    "en": "I answer questions only from the article below and cite the passages I used; when the article does "
    "not say, I tell you so.\n{about}\n\nCommands:\n",
}
_ADMIN_HELP = {"zh": "管理员命令：\n", "en": "Admin commands:\n"}


# Lines of /help that only one channel needs: how to leave the terminal, how to ask in a group.
_CHANNEL_HINTS: dict[str, dict[str, str]] = {
    "cli": {"zh": "/quit  退出\n", "en": "/quit  leave\n"},
    "telegram": MESSAGES["group_hint"],
    "wecom_bot": {"zh": "在群里：@我 再提问。\n", "en": "In groups: mention me (@) with your question.\n"},
}


def progress(event: Progress, lang: str) -> str:
    """A hidden step as users see it, with how far along it is when known ("模型正在阅读新内容…… 40%")."""
    shown = message(f"progress_{event.step}", lang)
    return shown + (f" {event.fraction:.0%}" if event.fraction is not None else "")


def channel_hint(channel: str, lang: str) -> str:
    """The channel's own /help lines ("" for none)."""
    hints = _CHANNEL_HINTS.get(channel, {})
    return hints.get(lang if lang in ("zh", "en") else "en", "")


def help_text(lang: str, about: str, commands: str, admin_commands: str = "", extra: str = "") -> str:
    """The /help text: what the bot knows (`about`), the command lines (drawn from the command table),
    `extra` lines of one channel (the terminal's /quit), and the admin's command lines when given."""
    lang = lang if lang in _HELP else "en"
    text = _HELP[lang].format(about=about) + commands + extra
    return text + ("\n" + _ADMIN_HELP[lang] + admin_commands if admin_commands else "")


def final_text(reply: Reply, lang: str) -> str:
    """The reply as a messenger shows it at the end (Reply.text_with_sources), an apology if it is empty."""
    return reply.text_with_sources().strip() or message("apology", lang)
