"""The REPL behind `bot chat`: streaming answers in the terminal, readline history, slash commands."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from bot.channels.common import format_sources
from bot.citations import strip_markers
from bot.engine import Engine
from bot.texts import help_text, language, message
from bot.types import Delta, Incoming, Queued, Reply, Retract

CLI_EXTRA = {
    "zh": "/reload  重新加载内容\n/stats  统计\n/quit  退出\n",
    "en": "/reload  reload the content\n/stats  turn statistics\n/quit  leave\n",
}


class Console:
    """Reads questions from a terminal (or any stream) and prints streamed, cited answers."""

    def __init__(self, engine: Engine, *, out: TextIO = sys.stdout, read: Callable[[str], str] = input,
                 history_file: Path | None = None, user: str | None = None) -> None:
        self.engine = engine
        self.out = out
        self.read = read
        self.history_file = history_file
        self.user = user or os.environ.get("USER", "local")
        self.lang = "zh"

    def _setup_readline(self) -> None:
        if self.history_file is None:
            return
        with contextlib.suppress(ImportError, OSError):
            import readline

            self.history_file.parent.mkdir(parents=True, exist_ok=True)
            if self.history_file.exists():
                readline.read_history_file(self.history_file)
            readline.set_history_length(1000)

    def _save_readline(self) -> None:
        if self.history_file is None:
            return
        with contextlib.suppress(ImportError, OSError):
            import readline

            readline.write_history_file(self.history_file)

    def say(self, text: str = "") -> None:
        """Print a line and flush (the output may be a pipe)."""
        print(text, file=self.out, flush=True)

    async def run(self) -> int:
        """Loop until /quit or end of input."""
        self._setup_readline()
        self.say(self.engine.about("zh") + "  输入 /help 查看命令。 Type /help for commands.")
        try:
            while True:
                try:
                    line = await asyncio.to_thread(self.read, "\n你/you> ")
                except EOFError:
                    self.say()
                    return 0
                if not line.strip():
                    continue
                if line.strip().startswith("/"):
                    if await self.command(line.strip()):
                        return 0
                    continue
                await self.answer(line)
        except KeyboardInterrupt:
            self.say()
            return 0
        finally:
            self._save_readline()

    async def command(self, line: str) -> bool:
        """Run a slash command; True means quit."""
        name = line.split()[0].lower()
        key = self._key()
        if name in ("/quit", "/exit", "/q"):
            return True
        if name == "/help":
            self.say(help_text(self.lang, self.engine.about(self.lang), extra=CLI_EXTRA[self.lang]))
        elif name == "/reset":
            await self.engine.reset(key)
            self.say(message("reset", self.lang))
        elif name == "/sources":
            cites = await self.engine.sources(key)
            self.say(format_sources(cites) if cites else message("no_sources", self.lang))
        elif name == "/reload":
            self.say((await self.engine.reload()).summary())
        elif name == "/stats":
            self.say((await self.engine.stats()).summary())
        else:
            self.say(message("unknown_command", self.lang, command=name))
        return False

    def _key(self) -> str:
        return f"cli:{self.user}"

    async def answer(self, text: str) -> Reply:
        """Stream one answer to the output, then its sources (or the retraction)."""
        self.lang = language(text)
        if problem := self.engine.check_input(text):
            self.say(problem)
            return Reply(problem, refused=True)
        msg = Incoming("cli", self.user, self.user, text.strip())
        streamed = ""
        reply: Reply | None = None
        self.out.write("bot> ")
        async for event in self.engine.stream(msg):
            if isinstance(event, Queued):
                self.out.write(message("queued", self.lang, n=event.position) + " ")
            elif isinstance(event, Retract):
                streamed = ""
                self.out.write("\n   (" + ("草稿未通过原文核对，重新查找原文……" if self.lang == "zh"
                                         else "draft not supported by the text; checking the source again…")
                               + ")\nbot> ")
            elif isinstance(event, Delta):
                streamed += event.text
                self.out.write(event.text)
            else:
                reply = event
            self.out.flush()
        assert reply is not None
        self._finish(streamed, reply)
        return reply

    def _finish(self, streamed: str, reply: Reply) -> None:
        if not streamed:
            self.say(reply.text)
        elif reply.retracted:
            self.say()
            self.say("—— " + ("撤回：引用的段落不支持上面的回答。" if self.lang == "zh"
                              else "Withdrawn: the cited passages do not support the draft above."))
            self.say("bot> " + reply.text)
        elif strip_markers(streamed).strip() != strip_markers(reply.text).strip():
            self.say()
            self.say("bot> " + reply.text)
        else:
            self.say()
        for c in reply.citations:
            self.say(f"  [{c.n}] {c.section}")
