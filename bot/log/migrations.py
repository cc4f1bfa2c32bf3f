"""Numbered schema migrations for the log store; append new ones, never edit an applied one.

One schema for both engines: written in SQLite's types, which the PostgreSQL connection maps
(`postgres.pg_types`: INTEGER PRIMARY KEY an identity column, INTEGER a BIGINT, REAL a DOUBLE PRECISION).
"""

from __future__ import annotations

import time

from bot.log.database import Database

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "turns, events, seen",
        """
        CREATE TABLE turns (
            id INTEGER PRIMARY KEY,
            channel TEXT NOT NULL,
            chat_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            conversation TEXT NOT NULL,
            message_id TEXT,
            question TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            answer TEXT,
            draft TEXT,
            refused INTEGER,
            retracted INTEGER NOT NULL DEFAULT 0,
            decline_reason TEXT,
            citations TEXT,
            ttft_ms INTEGER,
            total_ms INTEGER,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            model TEXT,
            content_version TEXT,
            error TEXT,
            created_at REAL NOT NULL,
            answered_at REAL
        );
        CREATE INDEX turns_conversation ON turns (conversation, id);
        CREATE INDEX turns_status ON turns (status, created_at);
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            channel TEXT NOT NULL,
            chat_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT ''
        );
        CREATE TABLE seen (
            channel TEXT NOT NULL,
            key TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (channel, key)
        );
        """,
    ),
    (
        2,
        "passages and conversation resets",
        """
        CREATE TABLE passages (
            id TEXT PRIMARY KEY,
            section TEXT NOT NULL,
            text TEXT NOT NULL,
            source TEXT NOT NULL,
            content_version TEXT NOT NULL,
            first_seen REAL NOT NULL
        );
        CREATE TABLE resets (
            conversation TEXT PRIMARY KEY,
            after_turn INTEGER NOT NULL,
            at REAL NOT NULL
        );
        """,
    ),
    (
        3,
        "delivery state of answers",
        # delivery: NULL while nothing is generated; 'waiting' until the messenger confirms (a restart re-sends
        # it while young), then 'delivered', or 'failed' when the messenger refuses for good (blocked, too old).
        """
        ALTER TABLE turns ADD COLUMN delivery TEXT;
        ALTER TABLE turns ADD COLUMN delivered_at REAL;
        ALTER TABLE turns ADD COLUMN delivery_error TEXT;
        UPDATE turns SET delivery='delivered', delivered_at=answered_at WHERE status IN ('answered', 'error');
        CREATE INDEX turns_delivery ON turns (delivery, created_at);
        """,
    ),
    (
        4,
        "turns by messenger message and by time",
        # A repeated message finds its turn (Core._again), and a start reads the last minute's questions
        # for the rate limits (Core.start), in time that does not grow with the log.
        """
        CREATE INDEX turns_message ON turns (channel, chat_id, message_id);
        CREATE INDEX turns_created ON turns (created_at);
        """,
    ),
    (
        5,
        "how each answer was decided",
        # path: 'extract' (a sentence picked and the answer copied out of it) or 'draft' (written freely and
        # checked); score: the extraction's calibrated probability; signals: what it was computed from (JSON).
        """
        ALTER TABLE turns ADD COLUMN path TEXT;
        ALTER TABLE turns ADD COLUMN score REAL;
        ALTER TABLE turns ADD COLUMN signals TEXT;
        """,
    ),
    (
        6,
        "how each answer reached its reader",
        # delivered_via: NULL where the channel has one way (a Telegram message, a WeCom app message); the WeCom
        # AI bot's 'stream' (the reply bubble), 'message' (a new message: the stream could not be updated any
        # more) or 'response_url' (WeCom stopped polling the stream).
        """
        ALTER TABLE turns ADD COLUMN delivered_via TEXT;
        """,
    ),
    (
        7,
        "which instance is on each turn",
        # lease_owner: the bot instance answering or delivering the turn; lease_until: when its claim lapses
        # unless renewed. Another instance (or a restart) takes over a turn only once its lease has lapsed.
        """
        ALTER TABLE turns ADD COLUMN lease_owner TEXT;
        ALTER TABLE turns ADD COLUMN lease_until REAL;
        CREATE INDEX turns_lease ON turns (lease_owner);
        """,
    ),
    (
        8,
        "content changes waiting for an admin's confirmation; events by kind",
        # A preview's Confirm may reach another instance than the one that showed it: the proposal is here,
        # taken once (taken_at), by the admin's conversation only, for ten minutes. Events by kind: every
        # instance looks for the last content change often (Services.follow).
        """
        CREATE TABLE proposals (
            token TEXT PRIMARY KEY,
            conversation TEXT NOT NULL,
            action TEXT NOT NULL,
            name TEXT NOT NULL,
            markdown TEXT NOT NULL,
            created_at REAL NOT NULL,
            taken_at REAL
        );
        CREATE INDEX events_kind ON events (kind, id);
        """,
    ),
    (
        9,
        "where a turn's answer is being shown",
        # placeholder: the messenger's message showing the answer in progress (Telegram: its message id).
        # An instance taking the turn over (the first one died, or restarted) edits it into the answer
        # instead of leaving it as it was and sending the answer as another message.
        """
        ALTER TABLE turns ADD COLUMN placeholder TEXT;
        """,
    ),
    (
        10,
        "readers' ratings, messages awaiting a reply, digests sent, an answer's closest sentence",
        # ratings: one per reader per answer (changed in place), with an optional reason.
        # awaiting: a bot message whose reply means something (the reason for a 👎; content for the gaps
        # listed in it), keyed by where it was shown. digests: one row per period sent, claimed by the one
        # instance that sends it; digest_admins: the admins who opted in to it (/digest on). closest: the
        # sentence an answer was drawn from, or the one a decline found nearest, for /gaps.
        # proposals.questions: the gap questions a content change was made for, re-asked once it is in.
        """
        CREATE TABLE ratings (
            turn_id INTEGER NOT NULL,
            user_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            rating INTEGER NOT NULL,
            reason TEXT,
            at REAL NOT NULL,
            PRIMARY KEY (turn_id, user_id)
        );
        CREATE INDEX ratings_at ON ratings (at);
        CREATE TABLE awaiting (
            channel TEXT NOT NULL,
            chat_id TEXT NOT NULL,
            message_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            data TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (channel, chat_id, message_id)
        );
        CREATE TABLE digests (
            period TEXT PRIMARY KEY,
            sent_at REAL NOT NULL
        );
        CREATE TABLE digest_admins (
            channel TEXT NOT NULL,
            user_id TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (channel, user_id)
        );
        ALTER TABLE turns ADD COLUMN closest TEXT;
        ALTER TABLE proposals ADD COLUMN questions TEXT;
        """,
    ),
]


async def apply(db: Database) -> list[int]:
    """Apply the migrations not yet recorded in `schema_migrations`; return their numbers."""
    async with db.migrating():
        await db.script("CREATE TABLE IF NOT EXISTS schema_migrations "
                        "(version INTEGER PRIMARY KEY, name TEXT, applied_at REAL);")
        done = {r["version"] for r in await db.fetchall("SELECT version FROM schema_migrations")}
        applied = []
        for number, name, sql in MIGRATIONS:
            if number in done:
                continue
            quoted = name.replace("'", "''")
            await db.script(f"{sql}\nINSERT INTO schema_migrations VALUES ({number}, '{quoted}', {time.time()});")
            applied.append(number)
        return applied


async def version(db: Database) -> int:
    """The highest applied migration."""
    row = await db.fetchone("SELECT max(version) AS v FROM schema_migrations")
    return int(row["v"] or 0) if row else 0
