"""Builders shared by the transforms tests: canonical event frames from plain tuples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from frigade.rules import DEFAULT_RULES, Action, FlowState, Rules
from transforms.codes import Codes
from transforms.state import LOG_COLUMNS, Target, target_from_log
from transforms.sync import REMEMBERED_FLOW_SCHEMA, REMEMBERED_STEP_SCHEMA, StateFrames, as_current
from transforms.validate import VALID, encode, order_log

T0 = datetime(2024, 1, 1, tzinfo=UTC)

#: (user, flow, action, step or None) in order
EventTuple = tuple[str, str, Action, str | None]


def step_table(flows: dict[str, tuple[str, ...]]) -> pl.LazyFrame:
    rows = [
        {"flow_slug": f, "step_id": s, "step_index": i, "step_count": len(ids)}
        for f, ids in flows.items()
        for i, s in enumerate(ids)
    ]
    return pl.DataFrame(
        rows,
        schema={"flow_slug": pl.String, "step_id": pl.String, "step_index": pl.Int64, "step_count": pl.Int64},
    ).lazy()


def ordered_events(events: list[EventTuple], flows: dict[str, tuple[str, ...]]) -> pl.LazyFrame:
    """Valid, ordered events as the validate stage hands them on (one second apart)."""
    rows = [
        {
            "user_id": u,
            "group_id": None,
            "flow_slug": f,
            "step_id": s,
            "step_index": flows[f].index(s) if s is not None else None,
            "action": a.value,
            "ts": T0 + timedelta(seconds=i),
            "data": None,
            "row_key": i + 1,
        }
        for i, (u, f, a, s) in enumerate(events)
    ]
    schema: dict[str, pl.DataType] = {
        "user_id": pl.String(),
        "group_id": pl.String(),
        "flow_slug": pl.String(),
        "step_id": pl.String(),
        "step_index": pl.Int64(),
        "action": pl.String(),
        "ts": pl.Datetime("us", "UTC"),
        "data": pl.String(),
        "row_key": pl.Int64(),
    }
    return pl.DataFrame(rows, schema=schema).lazy().sort("user_id", "flow_slug", "ts")


def target_of(events: pl.LazyFrame, steps: pl.LazyFrame, rules: Rules = DEFAULT_RULES) -> Target:
    """The target of valid events (``ordered_events``) through the pipeline's own stages: ``encode``
    against the catalog of ``steps`` (every flow active), ``order_log``, ``target_from_log``."""
    flows = steps.select("flow_slug").unique(maintain_order=True).with_columns(pl.lit("ACTIVE").alias("flow_status"))
    codes = Codes.from_frames(flows, steps)
    missing = [c for c in ("map_reason", "event_id") if c not in events.collect_schema().names()]
    coded = encode(events.with_columns(pl.lit(None, pl.String).alias(c) for c in missing), codes).collect()
    invalid = coded.filter(pl.col("problem") != VALID)
    assert invalid.is_empty(), invalid
    log = order_log(coded, len(codes.slugs))
    assert not log.get_column("duplicate").any(), "ordered_events gives every event its own time"
    return target_from_log(log.select(LOG_COLUMNS), codes, rules)


def state_frames(states: dict[tuple[str, str], FlowState]) -> StateFrames:
    """``states`` as remembered-state frames (what the API's read becomes)."""
    flows = [
        {
            "user_id": u,
            "flow_slug": f,
            "started": s.started,
            "completed": s.completed,
            "skipped": s.skipped,
            "current_step_index": s.current_step_index,
        }
        for (u, f), s in states.items()
    ]
    steps = [
        {
            "user_id": u,
            "flow_slug": f,
            "step_id": sid,
            "step_started": st.started,
            "step_completed": st.completed,
            "step_skipped": st.skipped,
        }
        for (u, f), s in states.items()
        for sid, st in zip(s.step_ids, s.steps, strict=True)
    ]
    return StateFrames(
        pl.DataFrame(flows, schema=REMEMBERED_FLOW_SCHEMA), pl.DataFrame(steps, schema=REMEMBERED_STEP_SCHEMA)
    )


def current_frames(states: dict[tuple[str, str], FlowState]) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """``states`` in the planner's current-state schemas."""
    return as_current(*state_frames(states))


def states_from_frames(
    flows: pl.DataFrame, steps: pl.DataFrame, catalog: dict[str, tuple[str, ...]]
) -> dict[tuple[str, str], tuple[object, ...]]:
    """Logical state tuples (as FlowState.logical()) from target frames."""
    out: dict[tuple[str, str], tuple[object, ...]] = {}
    step_rows: dict[tuple[str, str], dict[str, tuple[bool, bool, bool]]] = {}
    for r in steps.iter_rows(named=True):
        step_rows.setdefault((r["user_id"], r["flow_slug"]), {})[r["step_id"]] = (
            r["step_started"],
            r["step_completed"],
            r["step_skipped"],
        )
    for r in flows.iter_rows(named=True):
        key = (r["user_id"], r["flow_slug"])
        by_step = step_rows.get(key, {})
        out[key] = (
            r["started"],
            r["completed"],
            r["skipped"],
            r["current_step_index"],
            tuple(by_step.get(s, (False, False, False)) for s in catalog[r["flow_slug"]]),
        )
    return out
