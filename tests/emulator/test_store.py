"""The SQLite store on its own: durable, WAL, and robust to a catalog that changed since."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from emulator.store import Store, decode_state, encode_state, user_slug
from frigade.rules import Action, initial_state, replay

STEPS = ("a", "b", "c")


def _write(store: Store, user: str, action: Action, step: str | None, at: str) -> None:
    before = store.load(user, {"f": STEPS}).get("f")
    state = replay(STEPS, [(action, step, at)], before.state if before else None)
    store.record_write(
        user_id=user, flow_slug="f", state=state, action=action.value, step_id=step, group_id=None,
        data=None, created_at=at, received_at=at, changed=True, month="2024-01",
    )  # fmt: skip


def test_states_round_trip() -> None:
    state = replay(STEPS, [(Action.COMPLETED_STEP, "a", "t1"), (Action.SKIPPED_STEP, "c", "t2")])
    assert decode_state(encode_state(state), STEPS) == state


def test_a_changed_catalog_keeps_known_steps_and_the_current_step() -> None:
    state = replay(STEPS, [(Action.COMPLETED_STEP, "a", "t1"), (Action.STARTED_STEP, "c", "t2")])
    moved = decode_state(encode_state(state), ("new", "c", "a"))
    assert moved.step_ids == ("new", "c", "a")
    assert moved.step("a").completed
    assert moved.step("c").started
    assert not moved.step("new").started
    assert moved.current_step_id == "c"
    assert decode_state(encode_state(initial_state(STEPS)), ("x",)).current_step_index == -1


def test_data_survives_reopening_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = Store(path)
    _write(store, "u", Action.COMPLETED_STEP, "a", "t1")
    _write(store, "u", Action.STARTED_FLOW, None, "t2")
    store.close()

    again = Store(path)
    assert again.load("u", {"f": STEPS})["f"].state.step("a").completed
    assert [(h.action, h.step_id) for h in again.history("u")] == [
        ("COMPLETED_STEP", "a"),
        ("STARTED_FLOW", None),
    ]
    assert again.is_active("u", "2024-01")
    assert not again.is_active("u", "2024-02")
    user = again.user("u")
    assert user is not None
    assert user.slug == user_slug("u")
    assert again.user_id_for_slug(user.slug) == "u"
    again.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_clear_forgets_everything(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    _write(store, "u", Action.STARTED_FLOW, None, "t")
    store.clear()
    assert store.history("u") == []
    assert store.load("u", {"f": STEPS}) == {}
    assert store.distinct_users() == 0
    assert store.active_count("2024-01") == 0
    store.close()


def test_a_reset_flow_hides_earlier_writes_from_flow_responses(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    _write(store, "u", Action.COMPLETED_STEP, "a", "t1")
    store.reset_flow("u", "f", STEPS, "t2")
    stored = store.load("u", {"f": STEPS})["f"]
    assert stored.state == initial_state(STEPS)
    assert stored.responses_after == store.history("u")[-1].id
    store.close()
