"""Planning: the ordered requests that take each user-flow from its current state to its target.

State mode sends the fewest requests (every one changes state); history mode replays every valid,
de-duplicated event. Both are vectorised. For one user-flow in state mode:

1. Reset (NOT_STARTED_FLOW) first when the current state has something the target lacks that only a
   reset clears (a flow flag, or a skipped step), or when a reset and rebuilding from the initial
   state takes fewer requests than clearing steps one by one (both are planned; the shorter is kept).
2. Per step, the fewest step actions that turn its current (started, completed, skipped) into the
   target: NOT_STARTED_STEP clears started/completed, SKIPPED_STEP/COMPLETED_STEP/STARTED_STEP set them.
   Steps go in catalog order, except one "anchor" whose last action lands the pointer where the target
   has it, which goes last. Where no step action lands there, one (rarely two) extra step actions put
   the pointer back without changing any step's flags.
3. STARTED_FLOW only when nothing else starts the flow; SKIPPED_FLOW and COMPLETED_FLOW last,
   COMPLETED_FLOW explicit unless the profile completes the flow with its last step's COMPLETED_STEP.

Under a profile where COMPLETED/SKIPPED_STEP on step k starts step k+1, no STARTED_STEP is planned for
a step the previous step's action already starts, a NOT_STARTED_STEP follows where the target has that
step not started, and the pointer is never fixed by re-sending the previous step's completion.

Each request carries the time and data of the source event that established its fact.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from frigade.rules import DEFAULT_RULES, Action, Rules
from transforms.codes import act_code
from transforms.state import FLOW_KEY, Target, place_in_run

A = Action
PLAN_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "group_id": pl.String(),
    "flow_slug": pl.String(),
    "seq": pl.Int64(),
    "action": pl.String(),
    "step_id": pl.String(),
    "created_at": pl.Datetime("us", "UTC"),
    "data": pl.String(),
    "origin": pl.Int64(),
}
CURRENT_FLOW_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "flow_slug": pl.String(),
    "c_started": pl.Boolean(),
    "c_completed": pl.Boolean(),
    "c_skipped": pl.Boolean(),
    "c_index": pl.Int64(),
}
CURRENT_STEP_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "flow_slug": pl.String(),
    "step_id": pl.String(),
    "c_st": pl.Boolean(),
    "c_co": pl.Boolean(),
    "c_sk": pl.Boolean(),
}


#: the integer id of a user-flow: its row in ``Target.flows``
UF = "uf"
_FLOW_FACTS = ["reset_pos", "start_pos", "completed_pos", "skipped_pos", "ptr_pos"]
_STEP_FACTS = ["started_pos", "completed_pos", "skipped_pos", "nss_pos"]


def _with_current(
    target: Target,
    current: tuple[pl.LazyFrame, pl.LazyFrame] | None,
    *,
    reset_all: bool = False,
    rules: Rules = DEFAULT_RULES,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The targets (integers only) with the current state joined on, replaced by the initial state
    where a reset is due: ``f`` has row i for user-flow i, ``s`` one row per catalog step in (uf,
    step_index) order, the grid ``_Grid`` reads by position. The current state is keyed by text, so
    it is mapped onto ``uf`` first (it is at most as large as the targets); every join keeps the
    targets' order, and what a step row needs of its flow is gathered by ``uf``, not joined."""
    flows = target.flows.lazy().select(
        UF, "started", "completed", "skipped", "current_step_index", "step_count", *_FLOW_FACTS
    )
    steps = target.steps.lazy().select(
        UF, "step_index", "gs", "step_started", "step_completed", "step_skipped", *_STEP_FACTS
    )
    if current is None:
        # a backfill: nothing to join, every current flag is false and no reset is forced
        f = flows.with_columns(
            *(pl.lit(False).alias(c) for c in ("c_started", "c_completed", "c_skipped")),
            pl.lit(rules.not_started_index, pl.Int64).alias("c_index"),
            pl.lit(reset_all).alias("need_reset"),
        )
        s = steps.with_columns(*(pl.lit(False).alias(c) for c in ("c_st", "c_co", "c_sk")))
    else:
        cur_flows, cur_steps = current
        keys = target.flows.lazy().select(*FLOW_KEY, UF)
        # One join on the full text key: chained joins let polars reorder them into one on step_id alone,
        # which multiplies every user's steps by every other's.
        step_keys = target.steps.lazy().select(*FLOW_KEY, "step_id", UF, "gs")
        # One current row per step and per flow, so that the grid keeps one row per catalog step. A
        # malformed state with two rows for one takes each flag any of them has (the furthest
        # pointer), whatever their order; reconciliation then shows what the server really holds.
        cur_steps_uf = (
            cur_steps.join(step_keys, on=[*FLOW_KEY, "step_id"], how="inner")
            .group_by(UF, "gs")
            .agg(pl.col("c_st", "c_co", "c_sk").any())
        )
        s = steps.join(cur_steps_uf, on=[UF, "gs"], how="left", maintain_order="left").with_columns(
            pl.col("c_st", "c_co", "c_sk").fill_null(False)
        )
        sk_reset = s.group_by(UF).agg((pl.col("c_sk") & ~pl.col("step_skipped")).any().alias("_sk_reset"))
        cur_flows_uf = (
            cur_flows.join(keys, on=FLOW_KEY, how="inner")
            .group_by(UF)
            .agg(pl.col("c_started", "c_completed", "c_skipped").any(), pl.col("c_index").max())
        )
        f = (
            flows.join(cur_flows_uf, on=UF, how="left", maintain_order="left")
            .join(sk_reset, on=UF, how="left", maintain_order="left")
            .with_columns(
                pl.col("c_started", "c_completed", "c_skipped", "_sk_reset").fill_null(False),
                pl.col("c_index").fill_null(rules.not_started_index),
            )
            .with_columns(
                (
                    (pl.col("c_started") & ~pl.col("started"))
                    | (pl.col("c_completed") & ~pl.col("completed"))
                    | (pl.col("c_skipped") & ~pl.col("skipped"))
                    | pl.col("_sk_reset")
                    | reset_all
                ).alias("need_reset")
            )
            .with_columns(
                (pl.col(c) & ~pl.col("need_reset")).alias(c) for c in ("c_started", "c_completed", "c_skipped")
            )
            .with_columns(
                pl.when(pl.col("need_reset"))
                .then(rules.not_started_index)
                .otherwise(pl.col("c_index"))
                .alias("c_index")
            )
            .drop("_sk_reset")
        )
    f_, s_ = pl.collect_all([f, s])
    uf = s_.get_column(UF)
    s_ = s_.with_columns(
        f_.get_column("need_reset").gather(uf).alias("need_reset"),
        f_.get_column("current_step_index").gather(uf).alias("p"),
        f_.get_column("step_count").gather(uf).alias("step_count"),
    ).with_columns((pl.col(c) & ~pl.col("need_reset")).alias(c) for c in ("c_st", "c_co", "c_sk"))
    return f_, s_


@dataclass(frozen=True)
class _Grid:
    """Where each user-flow's steps are in a frame of one row per catalog step in (uf, step_index)
    order: user-flow i's step j is row ``start[i] + j``. Per-flow facts are read by position, with no
    group-by and no join."""

    start: pl.Series
    count: pl.Series

    @staticmethod
    def of(step_count: pl.Series) -> _Grid:
        count = step_count.cast(pl.Int64)
        return _Grid(count.cum_sum() - count, count)

    @property
    def rows(self) -> int:
        return int(self.count.sum() or 0)

    def any(self, mask: pl.Series) -> pl.Series:
        """Whether any of each flow's step rows is true: the difference of a running count."""
        running = pl.concat([pl.Series([0], dtype=pl.Int64), mask.fill_null(False).cast(pl.Int64).cum_sum()])
        return (running.gather(self.start + self.count) - running.gather(self.start)) > 0

    def at(self, index: pl.Series, values: pl.Series) -> pl.Series:
        """Each flow's value at its step ``index``; null where the flow has no such step."""
        inside = (index >= 0) & (index < self.count)
        row = pl.select(pl.when(pl.lit(inside)).then(pl.lit(self.start + index))).to_series()
        return values.gather(row)

    def last(self, mask: pl.Series) -> pl.Series:
        """Each flow's last step index whose row is true; null where none is."""
        rows = pl.int_range(mask.len(), dtype=pl.Int64, eager=True)
        hit = pl.select(pl.when(pl.lit(mask)).then(pl.lit(rows)).forward_fill()).to_series()
        found = self.at(self.count - 1, hit)
        return pl.select(pl.when(pl.lit(found) >= pl.lit(self.start)).then(pl.lit(found - self.start))).to_series()


def _step_needs(s: pl.DataFrame, rules: Rules) -> pl.DataFrame:
    st, co, sk = pl.col("step_started"), pl.col("step_completed"), pl.col("step_skipped")
    clear = (pl.col("c_st") & ~st) | (pl.col("c_co") & ~co)
    c2_st = pl.col("c_st") & ~clear
    c2_co = pl.col("c_co") & ~clear
    need_sk = sk & ~pl.col("c_sk")
    need_co = co & ~c2_co
    need_st = st & ~c2_st & ~need_co & ~need_sk
    last_step = pl.col("step_count") - 1
    s = s.with_columns(
        (st & clear).alias("lead_nss"),
        need_sk.alias("need_sk"),
        need_co.alias("need_co"),
        need_st.alias("need_st"),
        (~st & (clear | need_sk)).alias("trail_nss"),
        pl.lit(False).alias("started_by_prev"),
    )
    if rules.start_next_step:
        # whether the previous step's planned COMPLETED/SKIPPED_STEP starts this one (rows in grid order)
        prev = _previous_step(pl.col("need_co") | pl.col("need_sk")).fill_null(False)
        # A step to clear (its completion undone) that the previous step's action starts is cleared
        # before that action, which then starts it again: no STARTED_STEP of its own is needed.
        s = s.with_columns(prev.alias("started_by_prev")).with_columns(
            (pl.col("need_st") & ~pl.col("started_by_prev")).alias("need_st"),
            (pl.col("trail_nss") | (~st & pl.col("started_by_prev"))).alias("trail_nss"),
            (pl.col("lead_nss") & pl.col("started_by_prev")).alias("nss_before_prev"),
        )
    else:
        s = s.with_columns(pl.lit(False).alias("nss_before_prev"))
    return s.with_columns(
        (pl.col("need_sk") | pl.col("need_co") | pl.col("need_st")).alias("moves"),
        pl.when(pl.col("need_st"))
        .then(pl.col("step_index"))
        .otherwise(pl.min_horizontal(pl.col("step_index") + 1, last_step))
        .alias("land"),
    )


def _previous_step(value: pl.Expr) -> pl.Expr:
    """The value on the flow's previous step (rows in grid order); null on a flow's first step."""
    return pl.when(pl.col(UF) == pl.col(UF).shift(1)).then(value.shift(1))


def plan_state(
    target: Target, current: tuple[pl.LazyFrame, pl.LazyFrame] | None = None, rules: Rules = DEFAULT_RULES
) -> pl.DataFrame:
    """Fewest ordered requests from the current state (default: nothing yet) to the target state."""
    rows = _rows(target, current, reset_all=False, rules=rules)
    if current is not None:
        # From a current state, clearing several steps one NOT_STARTED_STEP at a time can cost more
        # than one NOT_STARTED_FLOW and rebuilding: plan both, keep the shorter (ties: no reset).
        alt = _rows(target, current, reset_all=True, rules=rules)
        n0 = rows.group_by(UF).agg(pl.len().alias("_n0"))
        shorter = (
            alt.group_by(UF)
            .agg(pl.len().alias("_n1"))
            .join(n0, on=UF, how="left")
            .filter(pl.col("_n1") < pl.col("_n0").fill_null(0))
            .select(UF)
        )
        rows = pl.concat([rows.join(shorter, on=UF, how="anti"), alt.join(shorter, on=UF, how="semi")])
    return requests(target, _in_send_order(rows))


def _in_send_order(rows: pl.DataFrame) -> pl.DataFrame:
    """Rows sorted by (uf, key, slot), on one packed integer: a sort on one number is several times
    faster than on three. ``slot`` is -1..5 (3 bits), ``key`` -2..step_count+3 (29 bits: no flow has
    half a billion steps), ``uf`` a row of the targets (32 bits)."""
    packed = (
        pl.col(UF).cast(pl.UInt64) * (1 << 32)
        + (pl.col("key") + 2).cast(pl.UInt64) * (1 << 3)
        + (pl.col("slot") + 1).cast(pl.UInt64)
    )
    return rows.sort(packed)


def requests(target: Target, rows: pl.DataFrame) -> pl.DataFrame:
    """Plan rows (uf, act, gs, pos, in send order) with their text, times, data and source rows,
    gathered by position. A request whose fact has no event of its own takes the flow's last time."""
    uf, fact = rows.get_column(UF), rows.get_column("pos")
    flows, log, codes = target.flows, target.log, target.codes
    at = fact.fill_null(flows.get_column("last_pos").gather(uf))
    out = pl.DataFrame(
        {
            "user_id": flows.get_column("user_id").gather(uf),
            "group_id": flows.get_column("group_id").gather(uf),
            "flow_slug": flows.get_column("flow_slug").gather(uf),
            "seq": rows.select(place_in_run(UF)).to_series(),
            "action": codes.action_of(rows.get_column("act")),
            "step_id": codes.step_of(rows.get_column("gs")),
            "created_at": log.get_column("ts").gather(at),
            "data": _own_data(log, rows, fact),
            "origin": log.get_column("row_key").gather(fact),
        }
    )
    return out.select([pl.col(c).cast(t) for c, t in PLAN_SCHEMA.items()])


def _own_data(log: pl.DataFrame, rows: pl.DataFrame, fact: pl.Series) -> pl.Series:
    """The fact's event data, except for a STARTED_STEP whose step was started by completing or
    skipping the step before it: that payload belongs to the other step's event."""
    data = log.get_column("data").gather(fact)
    by_other = (
        (rows.get_column("act") == act_code(A.STARTED_STEP))
        & log.get_column("act").gather(fact).is_in([act_code(A.COMPLETED_STEP), act_code(A.SKIPPED_STEP)])
        & (log.get_column("gs").gather(fact) != rows.get_column("gs"))
    ).fill_null(False)
    return pl.select(pl.when(pl.lit(by_other)).then(None).otherwise(pl.lit(data))).to_series()


def _rows(
    target: Target, current: tuple[pl.LazyFrame, pl.LazyFrame] | None, *, reset_all: bool, rules: Rules
) -> pl.DataFrame:
    """The unordered requests (uf, key, slot, act, gs, pos) of every user-flow: ``pos`` is the log
    position of the event that established the fact the request sets. ``reset_all`` starts every
    one with a reset, as if its current state were cleared."""
    f, s = _with_current(target, current, reset_all=reset_all, rules=rules)
    s = _step_needs(s, rules)
    grid = _Grid.of(f.get_column("step_count"))
    if s.height != grid.rows:
        raise AssertionError(f"the step grid has {s.height} rows, its flows {grid.rows} steps")
    # Per user-flow, read off its steps by position: whether any step action moves the pointer, the
    # anchor (the last step whose action lands the pointer on the target's index p), and the steps
    # at p and just before it.
    p = f.get_column("current_step_index")
    col = s.get_column
    anchor = grid.last(col("moves") & (col("land") == col("p")))
    f = f.with_columns(
        grid.any(col("moves")).alias("has_moves"),
        anchor.alias("anchor"),
        grid.at(p, col("gs")).alias("p_gs"),
        grid.at(p, col("step_started")).fill_null(False).alias("p_st"),
        grid.at(p - 1, col("gs")).alias("pm1_gs"),
        grid.at(p - 1, col("step_completed")).fill_null(False).alias("pm1_co"),
        grid.at(p - 1, col("step_skipped")).fill_null(False).alias("pm1_sk"),
        grid.at(p - 1, col("step_started")).fill_null(False).alias("pm1_st"),
        grid.at(grid.count - 1, col("need_co")).fill_null(False).alias("last_co"),
        p.alias("p"),
    )
    p_ = pl.col("p")
    f = f.with_columns(
        pl.when(pl.col("has_moves"))
        .then(pl.col("anchor").is_null())
        .otherwise(pl.when((pl.col("c_index") == -1) & pl.col("started")).then(0).otherwise(pl.col("c_index")) != p_)
        .alias("fixup"),
        (
            pl.col("completed")
            & ~pl.col("c_completed")
            # the last step's COMPLETED_STEP completes the flow under such a profile
            & ~(pl.col("last_co").fill_null(False) & rules.last_step_completes_flow)
        ).alias("send_cf"),
        (pl.col("skipped") & ~pl.col("c_skipped")).alias("send_skf"),
    ).with_columns(
        (pl.col("started") & ~pl.col("c_started") & ~pl.col("has_moves") & ~pl.col("fixup") & ~pl.col("send_cf")).alias(
            "send_sf"
        ),
    )
    no_step = pl.lit(None, pl.UInt32)
    fix = pl.col("fixup")
    fix_back = (
        fix
        # re-sending the previous step's completion would start step p too under such a profile
        & (not rules.start_next_step)
        & ~pl.col("p_st").fill_null(False)
        # Re-sending SKIPPED_STEP also starts the step: only where the target has it started.
        & (pl.col("pm1_co").fill_null(False) | (pl.col("pm1_sk") & pl.col("pm1_st")).fill_null(False))
    )
    fix_here = fix & pl.col("p_st").fill_null(False)
    fix_pair = fix & ~fix_here & ~fix_back
    f = f.with_columns(fix_back.alias("fix_back"), fix_here.alias("fix_here"), fix_pair.alias("fix_pair"))
    uf = col(UF)
    anchor_s = anchor.gather(uf)
    s = s.with_columns(
        pl.when(pl.col("step_index") == anchor_s)
        .then(pl.col("step_count"))
        .otherwise(pl.col("step_index"))
        .alias("key"),
        # A step the anchor's action starts (sent last) is cleared after it, not before.
        (pl.col("started_by_prev") & (pl.col("step_index") == anchor_s + 1)).alias("after_anchor"),
        f.get_column("fix_pair").gather(uf).alias("pair"),
    ).with_columns(
        # where the previous step's actions go (the anchor's are last): a step cleared before them
        _previous_step(pl.col("key")).alias("prev_key"),
        # The pair's NOT_STARTED_STEP, sent last, also clears step p: p's own trailing one is not needed.
        (pl.col("trail_nss") & ~(pl.col("pair") & (pl.col("step_index") == pl.col("p")))).alias("trail_nss"),
    )

    def step_slot(flag: str, action: Action, slot: int, fact: str) -> pl.LazyFrame:
        late = pl.col("after_anchor") if flag == "trail_nss" else pl.lit(False)
        early = pl.col("nss_before_prev") if flag == "lead_nss" else pl.lit(False)
        return (
            s.lazy()
            .filter(pl.col(flag))
            .select(
                UF,
                pl.when(late)
                .then(pl.col("step_count"))
                .when(early)
                .then(pl.col("prev_key"))
                .otherwise(pl.col("key"))
                .alias("key"),
                pl.when(late).then(pl.lit(5)).when(early).then(pl.lit(-1)).otherwise(pl.lit(slot)).alias("slot"),
                pl.lit(act_code(action), pl.UInt8).alias("act"),
                "gs",
                pl.col(f"{fact}_pos").alias("pos"),
            )
        )

    n = pl.col("step_count")

    def flow_row(flag: pl.Expr, action: Action, key: pl.Expr, slot: int, step: pl.Expr, fact: str) -> pl.LazyFrame:
        return (
            f.lazy()
            .filter(flag)
            .select(
                UF,
                key.alias("key"),
                pl.lit(slot).alias("slot"),
                pl.lit(act_code(action), pl.UInt8).alias("act"),
                step.cast(pl.UInt32).alias("gs"),
                pl.col(f"{fact}_pos").alias("pos"),
            )
        )

    fix_back, fix_here, fix_pair = pl.col("fix_back"), pl.col("fix_here"), pl.col("fix_pair")
    parts = [
        flow_row(pl.col("need_reset"), A.NOT_STARTED_FLOW, pl.lit(-2), 0, no_step, "reset"),
        flow_row(pl.col("send_sf"), A.STARTED_FLOW, pl.lit(-1), 0, no_step, "start"),
        step_slot("lead_nss", A.NOT_STARTED_STEP, 0, "nss"),
        step_slot("need_sk", A.SKIPPED_STEP, 1, "skipped"),
        step_slot("need_co", A.COMPLETED_STEP, 2, "completed"),
        step_slot("need_st", A.STARTED_STEP, 3, "started"),
        step_slot("trail_nss", A.NOT_STARTED_STEP, 4, "nss"),
        flow_row(fix_here | fix_pair, A.STARTED_STEP, n + 1, 0, pl.col("p_gs"), "ptr"),
        flow_row(fix_pair, A.NOT_STARTED_STEP, n + 1, 1, pl.col("p_gs"), "ptr"),
        flow_row(fix_back & pl.col("pm1_co"), A.COMPLETED_STEP, n + 1, 0, pl.col("pm1_gs"), "ptr"),
        flow_row(fix_back & ~pl.col("pm1_co"), A.SKIPPED_STEP, n + 1, 0, pl.col("pm1_gs"), "ptr"),
        flow_row(pl.col("send_skf"), A.SKIPPED_FLOW, n + 2, 0, no_step, "skipped"),
        flow_row(pl.col("send_cf"), A.COMPLETED_FLOW, n + 3, 0, no_step, "completed"),
    ]
    return pl.concat(
        [p.with_columns(pl.col("key").cast(pl.Int64), pl.col("slot").cast(pl.Int32)) for p in parts]
    ).collect()


def plan_history(target: Target) -> pl.DataFrame:
    """Every valid, de-duplicated event, in order, with its own time and data."""
    if target.subset:
        raise ValueError("history mode replays the whole log: plan it from the whole target, not a subset")
    log = target.log
    rows = log.select(UF, "act", "gs", pl.int_range(pl.len(), dtype=pl.UInt32).alias("pos"))
    return requests(target, rows)
