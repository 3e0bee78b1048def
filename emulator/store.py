"""Durable storage of the emulator: one SQLite file in WAL mode.

Tables: ``users`` (user id, slug, first month seen), ``user_months`` (which users were active in
which calendar month: the MAU count), ``flow_states`` (the rules' ``FlowState`` per user and flow,
as JSON) and ``history`` (every accepted write, append-only, with whether it changed anything).

The store is synchronous and meant to be used from one thread (the server's event loop): each
request's read-modify-write is a handful of statements that take tens of microseconds, so running
them on the loop without awaiting in between is both the fastest option and what makes a write
atomic with respect to every other request. No lock is needed because nothing else touches it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frigade.rules import DEFAULT_RULES, FlowState, Rules, StepState, initial_state

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    first_seen_month TEXT NOT NULL,
    created_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_months (
    month TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (month, user_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS flow_states (
    user_id TEXT NOT NULL,
    flow_slug TEXT NOT NULL,
    state TEXT NOT NULL,
    responses_after INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (user_id, flow_slug)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    flow_slug TEXT NOT NULL,
    action TEXT NOT NULL,
    step_id TEXT,
    group_id TEXT,
    data TEXT,
    created_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    changed INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_user ON history (user_id, id);
"""

_UPSERT_STATE = """
INSERT INTO flow_states (user_id, flow_slug, state, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (user_id, flow_slug) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at
"""

_INSERT_HISTORY = """
INSERT INTO history (user_id, flow_slug, action, step_id, group_id, data, created_at, received_at, changed)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


@dataclass(frozen=True, slots=True)
class StoredFlow:
    state: FlowState
    #: history ids up to this one belong to before the flow's last DELETE reset (not flowResponses)
    responses_after: int = 0


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    id: int
    user_id: str
    flow_slug: str
    action: str
    step_id: str | None
    group_id: str | None
    data: str | None
    created_at: str
    received_at: str
    changed: bool

    def wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "userId": self.user_id,
            "flowSlug": self.flow_slug,
            "actionType": self.action,
            "stepId": self.step_id,
            "groupId": self.group_id,
            "data": json.loads(self.data) if self.data is not None else None,
            "createdAt": self.created_at,
            "receivedAt": self.received_at,
            "changed": self.changed,
        }


@dataclass(frozen=True, slots=True)
class UserRow:
    user_id: str
    slug: str
    first_seen_month: str
    created_at: str


def user_slug(user_id: str) -> str:
    # Deterministic so that a reset-and-replay gives every user the same slug again.
    return "user_" + hashlib.sha256(user_id.encode()).hexdigest()[:24]


def encode_state(state: FlowState) -> str:
    return json.dumps(
        {
            "stepIds": state.step_ids,
            "started": state.started,
            "completed": state.completed,
            "skipped": state.skipped,
            "currentStepIndex": state.current_step_index,
            "lastActionAt": state.last_action_at,
            "steps": [[s.started, s.completed, s.skipped, s.last_action_at] for s in state.steps],
        },
        separators=(",", ":"),
    )


def decode_state(text: str, step_ids: Sequence[str]) -> FlowState:
    """Read a stored state onto the catalog's current steps (the catalog may have changed since)."""
    raw = json.loads(text)
    stored_ids: list[str] = raw["stepIds"]
    by_id = {
        sid: StepState(bool(s[0]), bool(s[1]), bool(s[2]), s[3])
        for sid, s in zip(stored_ids, raw["steps"], strict=True)
    }
    index = int(raw["currentStepIndex"])
    if list(step_ids) != stored_ids and index >= 0:
        current = stored_ids[index] if index < len(stored_ids) else ""
        index = list(step_ids).index(current) if current in step_ids else 0
    return FlowState(
        step_ids=tuple(step_ids),
        started=bool(raw["started"]),
        completed=bool(raw["completed"]),
        skipped=bool(raw["skipped"]),
        current_step_index=min(index, len(step_ids) - 1),
        last_action_at=raw["lastActionAt"],
        steps=tuple(by_id.get(sid, StepState()) for sid in step_ids),
    )


class Store:
    """The emulator's SQLite file. Not thread-safe by design: see the module docstring."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        # check_same_thread=False: the in-process test client runs the app on a helper thread that is
        # still the only thread using the connection.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, cached_statements=64)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a crash of the process (only an OS crash can lose the
        # last transactions), and commits skip the fsync that would cap writes at the disk's speed.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._month = ""
        self._active: set[str] = set()

    def close(self) -> None:
        try:
            self._db.execute("PRAGMA optimize")
        finally:
            self._db.close()

    # -- users and monthly active users --------------------------------------------------------

    def _load_month(self, month: str) -> None:
        if month != self._month:
            rows = self._db.execute("SELECT user_id FROM user_months WHERE month = ?", (month,))
            self._active = {r[0] for r in rows}
            self._month = month

    def is_active(self, user_id: str, month: str) -> bool:
        self._load_month(month)
        return user_id in self._active

    def active_count(self, month: str) -> int:
        self._load_month(month)
        return len(self._active)

    def _touch_in_tx(self, user_id: str, month: str, now: str) -> None:
        self._load_month(month)
        if user_id in self._active:
            return
        self._db.execute(
            "INSERT OR IGNORE INTO users (user_id, slug, first_seen_month, created_at) VALUES (?, ?, ?, ?)",
            (user_id, user_slug(user_id), month, now),
        )
        self._db.execute("INSERT OR IGNORE INTO user_months (month, user_id) VALUES (?, ?)", (month, user_id))

    def touch(self, user_id: str, month: str, now: str) -> None:
        """Count the user as active this month (a read does this too)."""
        if self.is_active(user_id, month):
            return
        with self._tx():
            self._touch_in_tx(user_id, month, now)
        self._active.add(user_id)

    def user(self, user_id: str) -> UserRow | None:
        row = self._db.execute(
            "SELECT user_id, slug, first_seen_month, created_at FROM users WHERE user_id = ?", (user_id,)
        ).fetchone()
        return UserRow(*row) if row else None

    def user_id_for_slug(self, slug: str) -> str | None:
        row = self._db.execute("SELECT user_id FROM users WHERE slug = ?", (slug,)).fetchone()
        return str(row[0]) if row else None

    def distinct_users(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM users").fetchone()[0])

    def history_rows(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM history").fetchone()[0])

    # -- flow states ---------------------------------------------------------------------------

    def load(self, user_id: str, flows: Mapping[str, Sequence[str]]) -> dict[str, StoredFlow]:
        """The user's stored flows among ``flows`` (slug -> the catalog's step ids)."""
        out: dict[str, StoredFlow] = {}
        rows = self._db.execute(
            "SELECT flow_slug, state, responses_after FROM flow_states WHERE user_id = ?", (user_id,)
        )
        for slug, text, after in rows:
            step_ids = flows.get(slug)
            if step_ids is not None:
                out[slug] = StoredFlow(decode_state(text, step_ids), int(after))
        return out

    def record_write(
        self,
        *,
        user_id: str,
        flow_slug: str,
        state: FlowState,
        action: str,
        step_id: str | None,
        group_id: str | None,
        data: str | None,
        created_at: str,
        received_at: str,
        changed: bool,
        month: str,
    ) -> int:
        """Store one accepted write (new state, history row, user activity) in one transaction."""
        with self._tx():
            self._touch_in_tx(user_id, month, received_at)
            self._db.execute(_UPSERT_STATE, (user_id, flow_slug, encode_state(state), received_at))
            cur = self._db.execute(
                _INSERT_HISTORY,
                (user_id, flow_slug, action, step_id, group_id, data, created_at, received_at, int(changed)),
            )
        self._active.add(user_id)
        return int(cur.lastrowid or 0)

    def reset_flow(
        self, user_id: str, flow_slug: str, step_ids: Sequence[str], now: str, rules: Rules = DEFAULT_RULES
    ) -> None:
        """The DELETE reset: back to the initial state, and earlier writes stop being flowResponses."""
        with self._tx():
            self._db.execute(
                """
                INSERT INTO flow_states (user_id, flow_slug, state, responses_after, updated_at)
                VALUES (?, ?, ?, (SELECT coalesce(max(id), 0) FROM history), ?)
                ON CONFLICT (user_id, flow_slug) DO UPDATE SET
                    state = excluded.state, responses_after = excluded.responses_after,
                    updated_at = excluded.updated_at
                """,
                (user_id, flow_slug, encode_state(initial_state(step_ids, rules)), now),
            )

    def history(self, user_id: str, after: int = 0) -> list[HistoryEntry]:
        rows = self._db.execute(
            "SELECT id, user_id, flow_slug, action, step_id, group_id, data, created_at, received_at, changed"
            " FROM history WHERE user_id = ? AND id > ? ORDER BY id",
            (user_id, after),
        )
        return [
            HistoryEntry(
                id=r[0],
                user_id=r[1],
                flow_slug=r[2],
                action=r[3],
                step_id=r[4],
                group_id=r[5],
                data=r[6],
                created_at=r[7],
                received_at=r[8],
                changed=bool(r[9]),
            )
            for r in rows
        ]

    def clear(self) -> None:
        with self._tx():
            for table in ("users", "user_months", "flow_states", "history"):
                self._db.execute(f"DELETE FROM {table}")
        self._month = ""
        self._active = set()

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
