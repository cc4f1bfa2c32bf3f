"""The core every channel talks to, and the one it is wired as: a message in through `receive`, a `Turn`
out, whose events the adapter renders and whose delivery it reports back to the turn.

Its parts each do one job: `intake` (dedupe, gate, command dispatch, the question logged), `turns` (a
turn's life: answered and logged whatever happens, delivered, drained at shutdown, resumed at restart) and
`services` (the content and its reload, the library, the log's numbers: what commands get). The store is
reached only from the core; the engine answers one question and knows nothing of logs or messengers.
"""

from __future__ import annotations

from collections.abc import Iterable

from bot.backends.base import Backend, ProgressFn
from bot.config import Config, GapsConfig
from bot.content.knowledge import ContentSet, Knowledge
from bot.core.answerer import Answerer
from bot.core.gate import Gate, policies
from bot.core.intake import Intake
from bot.core.services import Services
from bot.core.turns import Turn, Turns
from bot.log.store import LogStore
from bot.types import Incoming, Notice, ReloadReport, Reply

__all__ = ["Core", "Turn"]


class Core:
    """Intake, turns and services wired together, for every channel alike."""

    def __init__(self, knowledge: Knowledge, engine: Answerer, store: LogStore, gate: Gate, *,
                 history_turns: int = 3, gaps: GapsConfig | None = None) -> None:
        self.knowledge, self.engine, self.store = knowledge, engine, store
        self.services = Services(knowledge, engine, store, gaps)
        self.turns = Turns(self.services, engine, store, history_turns=history_turns)
        self.intake = Intake(gate, store, self.turns)

    @property
    def gate(self) -> Gate:
        """The rules every message passes (the channels' policies, set by the composition root)."""
        return self.intake.gate

    @gate.setter
    def gate(self, gate: Gate) -> None:
        self.intake.gate = gate

    @property
    def content(self) -> ContentSet:
        """The content served now."""
        return self.knowledge.current

    async def start(self, progress: ProgressFn | None = None) -> None:
        """Record the content's passages and have the model read it (or restore its saved state). The rate
        limits need nothing: each question recounts its user's last minute from the log (Intake)."""
        await self.services.follow()  # marks the content changes so far as seen: the folder is read now
        await self.services.adopt(self.content, progress)

    async def receive(self, msg: Incoming) -> Turn | None:
        """What to do with a message (Intake.receive): a Turn, or None when it is not for the bot."""
        return await self.intake.receive(msg)

    async def ask(self, msg: Incoming) -> Reply | Notice:
        """The final Reply to a message (or the core's Notice), without streaming: `bot ask` and `bot eval`."""
        turn = await self.receive(msg)
        final = await turn.reply() if turn else Notice("")
        if turn is not None and turn.is_question:
            await turn.delivered()  # returned to the caller, who prints it
        return final

    async def reload(self, by: Incoming | None = None, progress: ProgressFn | None = None) -> ReloadReport:
        """Load the content again (Services.reload)."""
        return await self.services.reload(by, progress)

    async def pending(self, channels: Iterable[str]) -> list[Turn]:
        """Questions on these channels whose answer never reached the user, to answer or deliver now."""
        return await self.turns.pending(channels)

    async def follow(self) -> ReloadReport | None:
        """Reload when another instance sharing the log served new content (Services.follow)."""
        return await self.services.follow()

    async def orphans(self, channels: Iterable[str]) -> list[Turn]:
        """While serving: renew the leases on this process's turns, and take the pending ones no live instance
        is on (another instance sharing the log died, or a delivery here failed) to answer or deliver now."""
        await self.store.leases.renew()
        return await self.turns.orphans(channels)

    async def drain(self, grace_s: float) -> int:
        """Shutdown: answers in progress get `grace_s` seconds; how many were cancelled (Turns.drain)."""
        return await self.turns.drain(grace_s)

    async def first_seen(self, scope: str, key: str) -> bool:
        """A channel's replay protection (Intake.first_seen)."""
        return await self.intake.first_seen(scope, key)

    async def note(self, msg: Incoming, kind: str, detail: str = "") -> None:
        """Log an event about a message that is not a turn (a reply that failed to send)."""
        await self.intake.note(msg, kind, detail)


def wire(cfg: Config, knowledge: Knowledge, backend: Backend, store: LogStore, *,
         engine: Answerer | None = None) -> Core:
    """The one wiring of the core, the app's and the tests' alike: the engine over `backend` (or `engine`),
    the gate with every channel's policy, the history the config keeps."""
    from bot.answering.engine import Engine
    from bot.answering.prompts import Prompts

    gate = Gate(cfg.conversation.max_question_chars, policies(cfg))
    return Core(knowledge, engine or Engine(cfg, backend, Prompts()), store, gate,
                history_turns=cfg.conversation.history_turns, gaps=cfg.gaps)
