"""A small exception hierarchy: `BotError.user_message` is safe to show a chat user; `str()` is for operators."""

from __future__ import annotations


class BotError(Exception):
    """Base of the bot's own errors."""

    user_message = "Sorry, something went wrong on my side. Please try again later. / 抱歉，系统出错，请稍后再试。"


class ConfigError(BotError):
    """The configuration is invalid; the message names the key and the fix."""


class ModelError(BotError):
    """The model file is missing, truncated or not the expected one; the message names the fix."""

    user_message = "The language model is not available right now. / 模型暂不可用。"


class ContentError(BotError):
    """The content set cannot be loaded (missing folder, no text, unreadable file)."""


class BackendError(BotError):
    """The model backend failed while generating."""


class BackendBusy(BackendError):
    """The backend's queue is full."""

    user_message = "I am busy answering others; please ask again in a minute. / 当前排队人数较多，请稍后再问。"


class AnswerStopped(BackendError):
    """The answer was stopped before it finished: /reset, or the per-answer time limit."""

    user_message = "Stopped: the answer was cancelled or took too long. / 已停止：回答被取消或用时过长。"


class StoreUnavailable(BotError):
    """The log database takes no writes now (disk full, locked by another writer, I/O error)."""
