"""Existing state as the starting point: the target of each user-flow when Frigade already has state.

A three-way merge, as version control does it, per user-flow:
- ``base``: what this tool last asked for (a sync's remembered source target; nothing for a first
  backfill, which is the initial state);
- ``source``: what the export asks for now (the replayed target);
- ``current``: what Frigade holds now (read from the API; the initial state where nothing was read).

The source changed the user-flow when any flag, step flag or the pointer differs from the base; Frigade
changed it when the current state does. Then:
- only the source changed: the source's state (resets included, as a sync applies them);
- only Frigade changed, or neither: the current state (nothing a user did in Frigade is undone, and
  nothing is sent);
- both changed: progress from both (a flag true on either side stays true, the pointer at the further
  step): Frigade's state where it already has all the export's progress; where Frigade has progress the
  export lacks (each side has some, or the export reset what Frigade advanced), the user-flow is a
  conflict, listed for the report: Frigade's progress is kept, never undone.

Policy ``overwrite`` takes the source's state everywhere: the export wins.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, get_args

import polars as pl

from frigade.rules import DEFAULT_RULES, Rules
from transforms.codes import Codes
from transforms.plan import plan_state
from transforms.state import FLOW_KEY, FLOW_STATE_COLUMNS, STEP_KEY, STEP_STATE_COLUMNS, Target, target_from_state
from transforms.sync import StateFrames, as_current, changed_user_flows

Policy = Literal["merge", "overwrite"]
POLICIES: tuple[str, ...] = get_args(Policy)
#: which side each user-flow's merged state came from
RULE_SOURCE, RULE_CURRENT, RULE_BOTH = "source", "current", "both"
_FLAGS = ["started", "completed", "skipped"]


@dataclass(frozen=True)
class Merged:
    """The merged target, row for row the source's (same order, every other column kept), with a
    ``merge_rule`` per flow row; ``conflicts``: (user_id, flow_slug) both sides changed and Frigade keeps
    progress the export lacks."""

    flows: pl.DataFrame
    steps: pl.DataFrame
    conflicts: pl.DataFrame


def _side_flows(source: pl.DataFrame, state: StateFrames | None, prefix: str, not_started: int) -> pl.DataFrame:
    """``state``'s flow columns on the source's rows (prefixed), the initial state where it has none.
    Two rows for one user-flow take any flag either has and the further pointer, whatever their order."""
    keys = source.select(FLOW_KEY)
    if state is None or state.flows.is_empty():
        return keys.with_columns(
            *(pl.lit(False).alias(prefix + c) for c in _FLAGS),
            pl.lit(not_started, pl.Int64).alias(prefix + "current_step_index"),
        )
    one = state.flows.group_by(FLOW_KEY).agg(pl.col(*_FLAGS).any(), pl.col("current_step_index").max())
    return keys.join(one, on=FLOW_KEY, how="left", maintain_order="left").select(
        *FLOW_KEY,
        *(pl.col(c).fill_null(False).alias(prefix + c) for c in _FLAGS),
        pl.col("current_step_index").fill_null(not_started).cast(pl.Int64).alias(prefix + "current_step_index"),
    )


def _side_steps(source: pl.DataFrame, state: StateFrames | None, prefix: str) -> pl.DataFrame:
    keys = source.select(STEP_KEY)
    if state is None or state.steps.is_empty():
        return keys.with_columns(pl.lit(False).alias(prefix + c) for c in STEP_STATE_COLUMNS)
    one = state.steps.group_by(STEP_KEY).agg(pl.col(*STEP_STATE_COLUMNS).any())
    return keys.join(one, on=STEP_KEY, how="left", maintain_order="left").select(
        *STEP_KEY, *(pl.col(c).fill_null(False).alias(prefix + c) for c in STEP_STATE_COLUMNS)
    )


def _beyond(a: str, b: str, columns: list[str]) -> pl.Expr:
    """Side ``a`` has a flag of ``columns`` that side ``b`` lacks."""
    return pl.any_horizontal(pl.col(a + c) & ~pl.col(b + c) for c in columns)


def _differs(a: str, b: str, columns: list[str]) -> pl.Expr:
    return pl.any_horizontal(pl.col(a + c) != pl.col(b + c) for c in columns)


def merge_state(
    flows: pl.DataFrame,
    steps: pl.DataFrame,
    current: StateFrames | None,
    base: StateFrames | None = None,
    *,
    policy: Policy = "merge",
    not_started_index: int = -1,
) -> Merged:
    """The merged target of the source's ``flows`` (user_id, flow_slug, started, completed, skipped,
    current_step_index, ...) and ``steps`` (user_id, flow_slug, step_id, step_started, step_completed,
    step_skipped, ...), given Frigade's ``current`` state and the ``base`` (both may lack any user-flow:
    it is then in the initial state)."""
    s_f = flows.select(*FLOW_KEY, *(pl.col(c).alias("s_" + c) for c in FLOW_STATE_COLUMNS))
    s_s = steps.select(*STEP_KEY, *(pl.col(c).alias("s_" + c) for c in STEP_STATE_COLUMNS))
    b_f, c_f = (_side_flows(flows, st, p, not_started_index) for st, p in ((base, "b_"), (current, "c_")))
    b_s, c_s = (_side_steps(steps, st, p) for st, p in ((base, "b_"), (current, "c_")))
    # every frame has the source's rows in the source's order: put side by side, not joined
    st = pl.concat([s_s, b_s.drop(STEP_KEY), c_s.drop(STEP_KEY)], how="horizontal")
    step_diffs = st.group_by(FLOW_KEY).agg(
        _differs("s_", "b_", STEP_STATE_COLUMNS).any().alias("_s_steps"),
        _differs("c_", "b_", STEP_STATE_COLUMNS).any().alias("_c_steps"),
        _beyond("s_", "c_", STEP_STATE_COLUMNS).any().alias("_s_beyond"),
        _beyond("c_", "s_", STEP_STATE_COLUMNS).any().alias("_c_beyond"),
    )
    fl = (
        pl.concat([s_f, b_f.drop(FLOW_KEY), c_f.drop(FLOW_KEY)], how="horizontal")
        .join(step_diffs, on=FLOW_KEY, how="left", maintain_order="left")
        .with_columns(pl.col("_s_steps", "_c_steps", "_s_beyond", "_c_beyond").fill_null(False))
    )
    source_changed = _differs("s_", "b_", FLOW_STATE_COLUMNS) | pl.col("_s_steps")
    frigade_changed = _differs("c_", "b_", FLOW_STATE_COLUMNS) | pl.col("_c_steps")
    # progress one side has that the other lacks: a flag, or a further pointer
    s_beyond = _beyond("s_", "c_", _FLAGS) | (pl.col("s_current_step_index") > pl.col("c_current_step_index"))
    c_beyond = _beyond("c_", "s_", _FLAGS) | (pl.col("c_current_step_index") > pl.col("s_current_step_index"))
    rule = (
        pl.when(pl.lit(policy == "overwrite") | (source_changed & ~frigade_changed))
        .then(pl.lit(RULE_SOURCE))
        # both changed, but Frigade already has all the export's progress: the union is Frigade's
        .when(~source_changed | ~(s_beyond | pl.col("_s_beyond")))
        .then(pl.lit(RULE_CURRENT))
        .otherwise(pl.lit(RULE_BOTH))
    )
    # a conflict: both changed and Frigade has progress the export lacks (kept, as the export did not
    # ask for it: a reset in the export while Frigade advanced is one), so the report names the user
    fl = fl.with_columns(rule.alias("merge_rule")).with_columns(
        (
            (pl.col("merge_rule") != RULE_SOURCE) & source_changed & frigade_changed & (c_beyond | pl.col("_c_beyond"))
        ).alias("_conflict")
    )
    r = pl.col("merge_rule")
    merged_flows = flows.with_columns(fl["merge_rule"]).with_columns(
        *(
            pl.when(r == RULE_SOURCE)
            .then(fl["s_" + c])
            .when(r == RULE_CURRENT)
            .then(fl["c_" + c])
            .otherwise(fl["s_" + c] | fl["c_" + c])
            .alias(c)
            for c in _FLAGS
        ),
        pl.when(r == RULE_SOURCE)
        .then(fl["s_current_step_index"])
        .when(r == RULE_CURRENT)
        .then(fl["c_current_step_index"])
        .otherwise(pl.max_horizontal(fl["s_current_step_index"], fl["c_current_step_index"]))
        .alias("current_step_index"),
    )
    step_rule = steps.select(FLOW_KEY).join(
        fl.select(*FLOW_KEY, "merge_rule"), on=FLOW_KEY, how="left", maintain_order="left"
    )["merge_rule"]
    merged_steps = steps.with_columns(
        pl.when(pl.lit(step_rule) == RULE_SOURCE)
        .then(st["s_" + c])
        .when(pl.lit(step_rule) == RULE_CURRENT)
        .then(st["c_" + c])
        .otherwise(st["s_" + c] | st["c_" + c])
        .alias(c)
        for c in STEP_STATE_COLUMNS
    )
    return Merged(merged_flows, merged_steps, fl.filter(pl.col("_conflict")).select(FLOW_KEY))


def merge_target(
    target: Target,
    current: StateFrames | None,
    base: StateFrames | None,
    policy: Policy,
    rules: Rules = DEFAULT_RULES,
) -> tuple[Target, Merged]:
    """``target`` with its state replaced by the merge (its facts' log positions kept, so a request
    still carries the time and data of the source event that set its fact)."""
    merged = merge_state(
        target.flows, target.steps, current, base, policy=policy, not_started_index=rules.not_started_index
    )
    return replace(target, flows=merged.flows.drop("merge_rule"), steps=merged.steps), merged


def merge_summary(merged: Merged, current: StateFrames | None, policy: Policy) -> dict[str, int]:
    """What the merge did, in counts: user-flows by the side their state came from where Frigade had
    progress, the users with progress in Frigade (any flow), and the users with conflicts."""
    progress = _with_progress(current)
    rules = merged.flows.join(progress, on=FLOW_KEY, how="semi")["merge_rule"].value_counts()
    by = dict(zip(rules["merge_rule"].to_list(), rules["count"].to_list(), strict=True))
    return {
        "users_with_state": progress["user_id"].n_unique(),
        "user_flows_with_state": progress.join(merged.flows.select(FLOW_KEY), on=FLOW_KEY, how="semi").height,
        "user_flows_kept": int(by.get(RULE_CURRENT, 0)),
        "user_flows_merged": int(by.get(RULE_BOTH, 0)),
        ("user_flows_overwritten" if policy == "overwrite" else "user_flows_from_export"): int(by.get(RULE_SOURCE, 0)),
        "users_with_conflicts": merged.conflicts["user_id"].n_unique(),
    }


def _with_progress(state: StateFrames | None) -> pl.DataFrame:
    """(user_id, flow_slug) where ``state`` has any flag set: what the SDK or a user left in Frigade."""
    if state is None:
        return pl.DataFrame(schema={"user_id": pl.String(), "flow_slug": pl.String()})
    flows = state.flows.filter(pl.any_horizontal(pl.col(c) for c in _FLAGS)).select(FLOW_KEY)
    steps = state.steps.filter(pl.any_horizontal(pl.col(c) for c in STEP_STATE_COLUMNS)).select(FLOW_KEY)
    return pl.concat([flows, steps]).unique().sort(FLOW_KEY)


def users_with_progress(state: StateFrames | None) -> int:
    """How many users ``state`` shows any progress for."""
    return _with_progress(state)["user_id"].n_unique()


#: a re-planned user-flow's requests are numbered after every request its earlier plan had
_REPLAN_SEQ_GAP = 1


def landed_elsewhere(
    plan: pl.DataFrame, latest: pl.DataFrame, expected: StateFrames, returned: StateFrames
) -> pl.DataFrame:
    """(user_id, flow_slug) of the plan whose every request settled (sent, found applied or already in
    effect) and whose ``returned`` state is not the ``expected`` one: the server showed progress the
    plan did not start from (a user not read, or one who moved since the read)."""
    settled = latest.filter(pl.col("outcome").is_in(["sent", "resolved_applied", "already_in_effect"]))
    open_keys = plan.join(settled, on="request_id", how="anti").select(FLOW_KEY)
    keys = plan.select(FLOW_KEY).unique().join(open_keys, on=FLOW_KEY, how="anti")
    exp = StateFrames(*(f.join(keys, on=FLOW_KEY, how="semi") for f in expected))
    got = StateFrames(*(f.join(keys, on=FLOW_KEY, how="semi") for f in returned))
    if got.flows.is_empty():
        return keys.clear()
    return changed_user_flows(*exp, *got).join(got.flows.select(FLOW_KEY), on=FLOW_KEY, how="semi")


def replan(
    held: pl.DataFrame,
    source: StateFrames,
    expected: StateFrames,
    current: StateFrames,
    base: StateFrames | None,
    plan: pl.DataFrame,
    codes: Codes,
    policy: Policy,
    rules: Rules = DEFAULT_RULES,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The user-flows a push ``held`` (user_id, flow_slug) because the server showed progress made
    outside the run, planned again: from the ``current`` state the server returned to the policy's
    merge of it with the export's target (``source``). Returns (the new plan rows, numbered after the
    user-flow's earlier ones, with the time, data and source row of the earlier request of the same
    action and step; the merged flows and steps, the new ``expected`` state of those user-flows, in
    its columns)."""
    keys = held.select(FLOW_KEY).unique()
    flows = (
        source.flows.join(keys, on=FLOW_KEY, how="semi")
        .join(expected.flows.select(*FLOW_KEY, "group_id", "step_count"), on=FLOW_KEY, how="left")
        .sort(FLOW_KEY)
    )
    steps = (
        source.steps.join(keys, on=FLOW_KEY, how="semi")
        .join(expected.steps.select(*STEP_KEY, "step_index"), on=STEP_KEY, how="left")
        .sort(STEP_KEY)
    )
    merged = merge_state(flows, steps, current, base, policy=policy, not_started_index=rules.not_started_index)
    target = target_from_state(merged.flows, merged.steps, codes)
    start = StateFrames(*(f.join(keys, on=FLOW_KEY, how="semi") for f in current))
    rows = plan_state(target, as_current(*start), rules)
    earlier = plan.join(keys, on=FLOW_KEY, how="semi")
    # the earlier request of the same action and step carries the source event's time and data
    facts = (
        earlier.sort("seq")
        .unique([*FLOW_KEY, "action", "step_id"], keep="last")
        .select(
            *FLOW_KEY,
            "action",
            "step_id",
            pl.col("created_at").alias("_at"),
            pl.col("data").alias("_data"),
            pl.col("origin").alias("_origin"),
        )
    )
    # else, as the planner does for a fact without an event, the flow's last time
    after = earlier.group_by(FLOW_KEY).agg(
        (pl.col("seq").max() + _REPLAN_SEQ_GAP).alias("_from"), pl.col("created_at").max().alias("_last")
    )
    rows = (
        rows.join(facts, on=[*FLOW_KEY, "action", "step_id"], how="left", nulls_equal=True, maintain_order="left")
        .join(after, on=FLOW_KEY, how="left", maintain_order="left")
        .with_columns(
            pl.coalesce("created_at", "_at", "_last").alias("created_at"),
            pl.coalesce("data", "_data").alias("data"),
            pl.coalesce("origin", "_origin").alias("origin"),
            (pl.col("seq") + pl.col("_from").fill_null(0)).alias("seq"),
        )
        .select(rows.columns)
        .with_columns(pl.format("{}|{}|{}", "user_id", "flow_slug", "seq").alias("request_id"))
    )
    return (
        rows.select(plan.columns),
        merged.flows.select(expected.flows.columns),
        merged.steps.select(expected.steps.columns),
    )
