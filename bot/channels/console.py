"""The REPL behind `bot chat`: streaming answers in the terminal, readline history, slash commands."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from bot.text.markers import strip_markers
from bot.text.phrases import message, progress
from bot.types import Attachment, Delta, Incoming, Notice, Progress, Queued, Reply

if TYPE_CHECKING:
    from bot.core.runtime import Core, Turn

QUIT = ("/quit", "/exit", "/q")


class Console:
    """Reads questions from a terminal (or any stream) and prints streamed, cited answers."""

    def __init__(self, core: Core, *, out: TextIO = sys.stdout, read: Callable[[str], str] = input,
                 history_file: Path | None = None, user: str | None = None, admin: bool = True) -> None:
        self.core = core
        self.admin = admin  # the terminal's user runs the bot: an admin unless told otherwise
        self.out = out
        self.read = read
        self.history_file = history_file
        self.user = user or os.environ.get("USER", "local")

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
        self.say(self.core.services.about("zh") + "  输入 /help 查看命令。 Type /help for commands.")
        try:
            while True:
                try:
                    line = await asyncio.to_thread(self.read, "\n你/you> ")
                except EOFError:
                    self.say()
                    return 0
                if not line.strip():
                    continue
                if line.strip().lower() in QUIT:
                    return 0
                await self.answer(line)
        except KeyboardInterrupt:
            self.say()
            return 0
        finally:
            self._save_readline()

    async def answer(self, text: str) -> Reply | Notice | None:
        """Hand one line to the core; stream an answer with its sources, or print the core's notice."""
        turn = await self.core.receive(self.incoming(text))
        if turn is None:
            return None
        if not turn.is_question:
            return await self._notice(turn)
        streamed = ""
        reply: Reply | None = None
        self.out.write("bot> ")
        async for event in turn.events():
            if isinstance(event, Queued):
                self.out.write(message("queued", turn.lang, n=event.position) + " ")
            elif isinstance(event, Progress) and not streamed:
                self.out.write("(" + message(f"progress_{event.step}", turn.lang) + ") ")
            elif isinstance(event, Delta):
                streamed += event.text
                self.out.write(event.text)
            elif isinstance(event, Reply):
                reply = event
            self.out.flush()
        assert reply is not None
        self._finish(streamed, reply)
        await turn.delivered()
        return reply

    def incoming(self, text: str) -> Incoming:
        """The typed line; `/add PATH [N ...]` of a file on this machine sends that file, as a messenger would
        (after /gaps, N picks its topics)."""
        words = text.strip().split()
        if len(words) > 1 and words[0].lower() == "/add" and (found := _file_of(words[1:])) is not None:
            file, picks = found
            attachment = Attachment(file.name, file.stat().st_size, lambda: asyncio.to_thread(file.read_bytes))
            return Incoming("cli", self.user, self.user, picks, is_admin=self.admin, kind="document",
                            attachment=attachment)
        return Incoming("cli", self.user, self.user, text, is_admin=self.admin)

    async def _notice(self, turn: Turn) -> Notice:
        """A command's progress on one line, then its text; a picture is saved and its path shown; buttons
        are shown as the commands they send."""
        notice, line = Notice(""), ""
        async for event in turn.events():
            if isinstance(event, Progress):
                line = "(" + progress(event, turn.lang) + ")"
                self.out.write("\r" + line)
                self.out.flush()
            elif isinstance(event, Notice):
                notice = event
        if line:  # the progress line ends before the reply
            self.say()
        self.say(notice.text)
        if notice.image is not None:  # a terminal shows no picture: where to open it
            path = Path(tempfile.gettempdir()) / f"bot-{os.getpid()}-{int(time.time())}.png"
            path.write_bytes(notice.image)
            self.say(f"[PNG: {path}]")
        if notice.choices:
            self.say("   ".join(f"[{c.label}: {c.command}]" for c in notice.choices))
        return notice

    def _finish(self, streamed: str, reply: Reply) -> None:
        if not streamed:
            self.say(reply.text)
        elif strip_markers(streamed).strip() != strip_markers(reply.text).strip():
            self.say()
            self.say("bot> " + reply.text)
        else:
            self.say()
        if sources := reply.sources():
            self.say(sources)


def _file_of(words: list[str]) -> tuple[Path, str] | None:
    """The file `/add` names (its path may hold spaces) and the numbers after it; None when it names none."""
    for end in range(len(words), 0, -1):
        picks = words[end:]
        if any(not w.isdecimal() for w in picks):
            break
        try:
            path = Path(" ".join(words[:end])).expanduser()
            if path.is_file():
                return path, " ".join(picks)
        except (OSError, RuntimeError, ValueError):  # a name too long, ~user unknown: not a file
            continue
    return None
