"""Incremental sync: which user-flows changed since the remembered state, and that state as the
planner's "current".

The remembered state has two frames, the same shape as the target state's:
flows (user_id, flow_slug, started, completed, skipped, current_step_index) and
steps (user_id, flow_slug, step_id, step_started, step_completed, step_skipped).
"""

from __future__ import annotations

from typing import NamedTuple

import polars as pl

from frigade.rules import DEFAULT_RULES, Rules
from transforms.codes import Codes
from transforms.plan import CURRENT_FLOW_SCHEMA, CURRENT_STEP_SCHEMA
from transforms.state import FLOW_KEY, FLOW_STATE_COLUMNS, STEP_STATE_COLUMNS, place_in_run, run_number


class StateFrames(NamedTuple):
    """A state as two frames: one row per user-flow (``flows``) and one per user-flow-step (``steps``)."""

    flows: pl.DataFrame
    steps: pl.DataFrame


REMEMBERED_FLOW_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "flow_slug": pl.String(),
    "started": pl.Boolean(),
    "completed": pl.Boolean(),
    "skipped": pl.Boolean(),
    "current_step_index": pl.Int64(),
}
REMEMBERED_STEP_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "flow_slug": pl.String(),
    "step_id": pl.String(),
    "step_started": pl.Boolean(),
    "step_completed": pl.Boolean(),
    "step_skipped": pl.Boolean(),
}


def remembered(flows: pl.DataFrame, steps: pl.DataFrame) -> StateFrames:
    """Keep only the state columns of target-state frames."""
    return StateFrames(
        flows.select([pl.col(c).cast(t) for c, t in REMEMBERED_FLOW_SCHEMA.items()]),
        steps.select([pl.col(c).cast(t) for c, t in REMEMBERED_STEP_SCHEMA.items()]),
    )


def from_snapshot(snapshot: pl.DataFrame) -> StateFrames:
    """The state Frigade returned, as remembered state."""
    flows = snapshot.unique(FLOW_KEY, keep="first").select(
        "user_id",
        "flow_slug",
        pl.col("flow_started").alias("started"),
        pl.col("flow_completed").alias("completed"),
        pl.col("flow_skipped").alias("skipped"),
        "current_step_index",
    )
    steps = snapshot.select("user_id", "flow_slug", "step_id", "step_started", "step_completed", "step_skipped")
    return remembered(flows, steps)


def state_hashes(flows: pl.DataFrame, steps: pl.DataFrame) -> pl.DataFrame:
    """One hash per user-flow over every flag, the pointer and each step's flags. Each step's hash
    names its step, and a sum does not depend on order: the steps need no sorting."""
    step_fp = steps.group_by(FLOW_KEY).agg(pl.struct("step_id", *STEP_STATE_COLUMNS).hash(seed=7).sum().alias("_steps"))
    return (
        flows.select(*FLOW_KEY, *FLOW_STATE_COLUMNS)
        .join(step_fp, on=FLOW_KEY, how="left")
        .select(*FLOW_KEY, pl.struct(*FLOW_STATE_COLUMNS, "_steps").hash(seed=11).alias("state_hash"))
    )


def changed_user_flows(
    new_flows: pl.DataFrame, new_steps: pl.DataFrame, old_flows: pl.DataFrame, old_steps: pl.DataFrame
) -> pl.DataFrame:
    """(user_id, flow_slug) whose target differs from the remembered state: an anti-join on the
    state hash, so unchanged user-flows cost nothing to skip."""
    new = state_hashes(new_flows, new_steps)
    old = state_hashes(old_flows, old_steps)
    return new.join(old, on=[*FLOW_KEY, "state_hash"], how="anti").select(FLOW_KEY)


def as_current(flows: pl.DataFrame, steps: pl.DataFrame) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Remembered state in the planner's CURRENT_* schemas."""
    cf = flows.select(
        "user_id",
        "flow_slug",
        pl.col("started").alias("c_started"),
        pl.col("completed").alias("c_completed"),
        pl.col("skipped").alias("c_skipped"),
        pl.col("current_step_index").alias("c_index"),
    )
    cs = steps.select(
        "user_id",
        "flow_slug",
        "step_id",
        pl.col("step_started").alias("c_st"),
        pl.col("step_completed").alias("c_co"),
        pl.col("step_skipped").alias("c_sk"),
    )
    return (
        cf.select([pl.col(c).cast(t) for c, t in CURRENT_FLOW_SCHEMA.items()]).lazy(),
        cs.select([pl.col(c).cast(t) for c, t in CURRENT_STEP_SCHEMA.items()]).lazy(),
    )


def merge(old: pl.DataFrame, new: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Remembered rows replaced, user-flow by user-flow, by newer ones."""
    return pl.concat([old.join(new.select(FLOW_KEY).unique(), on=FLOW_KEY, how="anti"), new]).sort(keys)


#: the per-user hash of the events a sync last left exactly at their target
EVENTS_HASH_SCHEMA: dict[str, pl.DataType] = {"user_id": pl.String(), "events_hash": pl.UInt64()}
#: bump when the replay or the planner changes what the same events mean: every hash changes with it
EVENTS_HASH_VERSION = 2


def events_hash_seed(codes: Codes, rules: Rules = DEFAULT_RULES) -> int:
    """The same events mean another target under other rules: the profile's settings are in the seed."""
    return codes.digest("events_hash", EVENTS_HASH_VERSION, sorted(rules.settings().items()))


def events_hashes(log: pl.DataFrame, seed: int) -> pl.DataFrame:
    """One number per user over their de-duplicated events in replay order (the log of
    ``transforms.validate.order_log``, each user's events together): each event's codes, time, data,
    group, source id and place in its user-flow, hashed and summed, under ``seed`` (the catalog's).
    Equal hashes mean the same events replayed in the same order under the same catalog, so the
    same target; they depend on that user's rows alone."""
    hashed = pl.struct("fl", "gs", "act", "ts", "data", "group_id", "event_id", place_in_run("uf").alias("place"))
    return (
        log.lazy()
        .select("user_id", run_number("user_id").alias("_user"), hashed.hash(seed=seed).alias("_h"))
        .group_by("_user", maintain_order=True)
        .agg(pl.col("user_id").first(), pl.col("_h").sum().alias("events_hash"))
        .drop("_user")
        .collect()
    )
