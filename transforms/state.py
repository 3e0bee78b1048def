"""Replay of the flow-state rules over ordered events, vectorised.

The rules live once, in ``frigade.rules``; this is their closed form over a whole event log, proved
equal to ``frigade.rules.replay`` by a property test over random action sequences:
- only events after the user's last NOT_STARTED_FLOW of the flow count ("the epoch");
- a step is skipped if the epoch has a SKIPPED_STEP for it; started / completed if there is a
  started-setting / COMPLETED_STEP after its last NOT_STARTED_STEP;
- the flow is started by any step action but NOT_STARTED_STEP and by STARTED_FLOW / COMPLETED_FLOW;
- the pointer is where the epoch's last STARTED/COMPLETED/SKIPPED_STEP put it, else 0 when started,
  else the profile's index of a flow not started;
- under a profile whose COMPLETED/SKIPPED_STEP starts the next step, each such event also counts as a
  started-setting event of the next step (at the same log position); under one where completing the
  last step completes the flow, a COMPLETED_STEP on the last step counts as a COMPLETED_FLOW.

Every fact is kept as the position (in the log) of the event that established it, so a plan that sets
the fact can carry that event's own ``createdAt``, ``data`` and source row, gathered only for the
requests that are sent. The work is on integers (``transforms.codes``): the log is sorted by user-flow,
so each user-flow is a contiguous run numbered ``uf``, and each step of each user-flow has a fixed
place in a dense grid (``uf``'s first grid row plus the step's index).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from frigade.rules import DEFAULT_RULES, Action, Rules
from transforms.codes import Codes, act_code

A = Action
FLOW_KEY = ["user_id", "flow_slug"]
STEP_KEY = ["user_id", "flow_slug", "step_id"]
FLOW_STATE_COLUMNS = ["started", "completed", "skipped", "current_step_index"]
STEP_STATE_COLUMNS = ["step_started", "step_completed", "step_skipped"]

_MOVES_POINTER = [act_code(a) for a in (A.STARTED_STEP, A.COMPLETED_STEP, A.SKIPPED_STEP)]
_STARTS_FLOW = [*_MOVES_POINTER, act_code(A.STARTED_FLOW), act_code(A.COMPLETED_FLOW)]
_STEP_ACTS = [act_code(a) for a in Action if a.is_step]
_STEP_FACTS = ("started_pos", "completed_pos", "skipped_pos", "nss_pos")
#: the columns a log must have (sorted by user-flow, then time and tie-break; no duplicates)
LOG_COLUMNS = ["uf", "user_id", "group_id", "fl", "gs", "act", "ts", "data", "row_key"]


@dataclass(frozen=True)
class Target:
    """The target state of every user-flow of a log.

    ``flows``: one row per user-flow, row i is ``uf`` i: user_id, flow_slug, group_id, the state
    (started, completed, skipped, current_step_index), step_count, and the facts' log positions
    (``*_pos``). ``steps``: one row per catalog step of each user-flow, in (uf, step_index) order:
    user_id, flow_slug, step_id, step_index, the step state and its facts' positions.
    ``log``: uf, act, gs, ts, data and row_key of every event, by position."""

    flows: pl.DataFrame
    steps: pl.DataFrame
    log: pl.DataFrame
    codes: Codes
    #: made by ``only``: the log still numbers every user-flow of the whole target
    subset: bool = False

    def state(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The target state alone, keyed by text (what is written, remembered and reconciled)."""
        return (
            self.flows.select(*FLOW_KEY, "group_id", *FLOW_STATE_COLUMNS, "step_count"),
            self.steps.select(*STEP_KEY, "step_index", *STEP_STATE_COLUMNS),
        )

    def only(self, keys: pl.DataFrame) -> Target:
        """The user-flows in ``keys`` (user_id, flow_slug), renumbered; the log is shared."""
        flows = self.flows.join(keys, on=FLOW_KEY, how="semi", maintain_order="left")
        renumber = flows.select(pl.col("uf"), pl.int_range(pl.len(), dtype=pl.UInt32).alias("_new"))
        steps = (
            self.steps.join(renumber, on="uf", how="inner", maintain_order="left")
            .with_columns(pl.col("_new").alias("uf"))
            .drop("_new")
        )
        return Target(flows.with_columns(renumber.get_column("_new").alias("uf")), steps, self.log, self.codes, True)


def run_number(*keys: str) -> pl.Expr:
    """0, 1, ... for the runs of equal ``keys`` in row order: a new number wherever any key changes."""
    changed = pl.any_horizontal(pl.col(k) != pl.col(k).shift() for k in keys).fill_null(True)
    return changed.cum_sum().cast(pl.UInt32).sub(1)


def place_in_run(key: str) -> pl.Expr:
    """Each row's 0-based place in its run of equal ``key``."""
    index = pl.int_range(pl.len(), dtype=pl.UInt32)
    start = pl.when((pl.col(key) != pl.col(key).shift()).fill_null(True)).then(index).forward_fill()
    return index - start


def _runs(frame: pl.LazyFrame, key: str, firsts: dict[str, pl.Expr], lasts: dict[str, pl.Expr]) -> pl.DataFrame:
    """One row per run of equal ``key`` in ``frame`` (sorted by key, then ``pos``): for each name of
    ``firsts`` the ``pos`` of the run's first row where its condition holds, of ``lasts`` the last;
    null where no row does. Fills along the sorted rows instead of a hash group-by: each fact is a
    backward (or forward) fill, checked to have stayed inside its run."""
    k = pl.col("_k")
    at_start = (pl.col(key) != pl.col(key).shift()).fill_null(True)
    at_end = (pl.col(key) != pl.col(key).shift(-1)).fill_null(True)
    index = pl.int_range(pl.len(), dtype=pl.UInt32)
    f = (
        frame.with_columns(index.alias("_k"), at_start.alias("_s"), at_end.alias("_e"))
        .with_columns(
            pl.when(pl.col("_s")).then(k).forward_fill().alias("_start"),
            pl.when(pl.col("_e")).then(k).backward_fill().alias("_end"),
        )
        .with_columns(
            *(
                pl.when(pl.when(c).then(k).backward_fill() <= pl.col("_end"))
                .then(pl.when(c).then(pl.col("pos")).backward_fill())
                .alias(n)
                for n, c in firsts.items()
            ),
            *(
                pl.when(pl.when(c).then(k).forward_fill() >= pl.col("_start"))
                .then(pl.when(c).then(pl.col("pos")).forward_fill())
                .alias(n)
                for n, c in lasts.items()
            ),
        )
    )
    starts, ends = pl.collect_all([f.filter(pl.col("_s")).select(key, *firsts), f.filter(pl.col("_e")).select(*lasts)])
    return starts.hstack(ends)


def _none_after(cond: pl.Expr, key: str) -> pl.Expr:
    """No row from this one to the end of its run (of equal ``key``, rows sorted by key) meets
    ``cond``: the next row that does is found by a backward fill and checked against the run's end."""
    k = pl.int_range(pl.len(), dtype=pl.UInt32)
    next_hit = pl.when(cond).then(k).backward_fill()
    run_end = pl.when((pl.col(key) != pl.col(key).shift(-1)).fill_null(True)).then(k).backward_fill()
    return next_hit.is_null() | (next_hit > run_end)


def target_from_log(log: pl.DataFrame, codes: Codes, rules: Rules = DEFAULT_RULES) -> Target:
    """The target of a sorted, de-duplicated log with ``LOG_COLUMNS``, ``uf`` marking its runs."""
    # Renumbered 0.. without gaps: de-duplication by event id can remove a user-flow's every event.
    log = log.with_columns(run_number("uf").alias("uf"))
    a = pl.col("act")
    e = pl.col("epoch")
    offsets = pl.Series(codes.offsets, dtype=pl.Int64)
    counts = pl.Series(codes.counts, dtype=pl.Int64)
    # a step event's place in its flow, and whether it names the flow's last step
    index_in_flow = log.get_column("gs").cast(pl.Int64) - offsets.gather(log.get_column("fl"))
    last_step = (index_in_flow == counts.gather(log.get_column("fl")) - 1).fill_null(False).alias("last_step")
    completes = a == act_code(A.COMPLETED_FLOW)
    if rules.last_step_completes_flow:
        completes = completes | ((a == act_code(A.COMPLETED_STEP)) & pl.col("last_step"))
    ev = (
        log.lazy()
        .with_columns(last_step)
        .select("uf", "act", "gs", "fl", pl.int_range(pl.len(), dtype=pl.UInt32).alias("pos"), "group_id", "last_step")
        .with_columns(
            # "the epoch": events after the user-flow's last reset
            _none_after(a == act_code(A.NOT_STARTED_FLOW), "uf").alias("epoch")
        )
    )
    flows = _runs(
        ev,
        "uf",
        {
            "first_pos": pl.lit(True),
            "start_pos": a.is_in(_STARTS_FLOW) & e,
            "completed_pos": completes & e,
            "skipped_pos": (a == act_code(A.SKIPPED_FLOW)) & e,
        },
        {
            "last_pos": pl.lit(True),
            "reset_pos": a == act_code(A.NOT_STARTED_FLOW),
            "group_pos": pl.col("group_id").is_not_null(),
            "ptr_pos": a.is_in(_MOVES_POINTER) & e,
        },
    )
    fl = log.get_column("fl").gather(flows.get_column("first_pos"))
    ptr = flows.get_column("ptr_pos")
    flows = flows.with_columns(
        fl.alias("fl"),
        counts.gather(fl).alias("step_count"),
        log.get_column("act").gather(ptr).alias("_ptr_act"),
        (log.get_column("gs").gather(ptr).cast(pl.Int64) - offsets.gather(fl)).alias("_ptr_step"),
    ).with_columns(
        pl.col("start_pos").is_not_null().alias("started"),
        pl.col("completed_pos").is_not_null().alias("completed"),
        pl.col("skipped_pos").is_not_null().alias("skipped"),
        pl.when(pl.col("_ptr_act") == act_code(A.STARTED_STEP))
        .then(pl.col("_ptr_step"))
        .when(pl.col("_ptr_act").is_not_null())
        .then(pl.min_horizontal(pl.col("_ptr_step") + 1, pl.col("step_count") - 1))
        .when(pl.col("start_pos").is_not_null())
        .then(pl.lit(0, pl.Int64))
        .otherwise(pl.lit(rules.not_started_index, pl.Int64))
        .alias("current_step_index"),
    )
    grid_start = (flows.get_column("step_count").cum_sum() - flows.get_column("step_count")).alias("grid_start")
    flows = flows.with_columns(grid_start)
    steps = _step_grid(ev, log, flows, codes, rules)
    flows = flows.with_columns(
        log.get_column("user_id").gather(flows.get_column("first_pos")).alias("user_id"),
        codes.slug_of(flows.get_column("fl")).alias("flow_slug"),
        log.get_column("group_id").gather(flows.get_column("group_pos")).alias("group_id"),
    ).drop("_ptr_act", "_ptr_step", "group_pos", "first_pos")
    return Target(flows, steps, log.select("uf", "act", "gs", "ts", "data", "row_key"), codes)


def _step_grid(ev: pl.LazyFrame, log: pl.DataFrame, flows: pl.DataFrame, codes: Codes, rules: Rules) -> pl.DataFrame:
    """One row per (user-flow, catalog step): the step's state and its facts' positions.

    Each step event's grid row is its user-flow's first grid row plus the step's index, so facts are
    aggregated on one integer and land in the grid by position, without a join."""
    a = pl.col("act")
    offsets = pl.Series(codes.offsets, dtype=pl.Int64)
    n_grid = int(flows.get_column("step_count").sum() or 0)
    uf = log.get_column("uf")
    g = (
        flows.get_column("grid_start").gather(uf)
        + log.get_column("gs").cast(pl.Int64)
        - offsets.gather(log.get_column("fl"))
    ).alias("g")
    # each step's events in order, its runs keyed by grid row
    step_ev = ev.with_columns(g).filter(pl.col("epoch") & a.is_in(_STEP_ACTS)).select("g", "act", "pos", "last_step")
    if rules.start_next_step:
        # the next step's start, as an event of its own at the same position: it sets started only
        done = a.is_in([act_code(A.COMPLETED_STEP), act_code(A.SKIPPED_STEP)]) & ~pl.col("last_step")
        nxt = step_ev.filter(done).select(
            (pl.col("g") + 1).alias("g"), pl.lit(act_code(A.STARTED_STEP), pl.UInt8).alias("act"), "pos", "last_step"
        )
        step_ev = pl.concat([step_ev, nxt.with_columns(pl.col("act").cast(step_ev.collect_schema()["act"]))])
    # by (g, pos) packed into one number, which sorts several times faster than two columns: a
    # step's started-by-the-previous event shares no (g, pos) with an event of its own, so it is unique
    step_ev = step_ev.select("g", "act", "pos").sort(pl.col("g").cast(pl.UInt64) * (1 << 32) + pl.col("pos"))
    nss = a == act_code(A.NOT_STARTED_STEP)
    live = pl.col("live")  # after the step's last NOT_STARTED_STEP
    facts = _runs(
        step_ev.with_columns(_none_after(nss, "g").alias("live")),
        "g",
        {
            "started_pos": a.is_in(_MOVES_POINTER) & live,
            "completed_pos": (a == act_code(A.COMPLETED_STEP)) & live,
            "skipped_pos": a == act_code(A.SKIPPED_STEP),
        },
        {"nss_pos": nss},
    )
    where = facts.get_column("g")
    grid_uf = flows.select(pl.col("uf").repeat_by("step_count").explode()).to_series()
    step_index = pl.int_range(n_grid, dtype=pl.Int64, eager=True) - flows.get_column("grid_start").gather(grid_uf)
    grid_fl = flows.get_column("fl").gather(grid_uf)
    gs = (offsets.gather(grid_fl) + step_index).cast(pl.UInt32)
    cols = {c: _scatter(n_grid, where, facts.get_column(c)) for c in _STEP_FACTS}
    first_pos = flows.get_column("first_pos").gather(grid_uf)
    return pl.DataFrame(
        {
            "user_id": log.get_column("user_id").gather(first_pos),
            "flow_slug": codes.slug_of(grid_fl),
            "step_id": codes.step_of(gs),
            "step_index": step_index,
            "step_started": cols["started_pos"].is_not_null(),
            "step_completed": cols["completed_pos"].is_not_null(),
            "step_skipped": cols["skipped_pos"].is_not_null(),
            "uf": grid_uf,
            "gs": gs,
            **cols,
        }
    )


def _scatter(n: int, where: pl.Series, values: pl.Series) -> pl.Series:
    """A series of ``n`` nulls with ``values`` at positions ``where``."""
    out = pl.repeat(None, n, dtype=values.dtype, eager=True)
    return out.scatter(where, values) if where.len() else out


_FLOW_FACTS = ("reset_pos", "start_pos", "completed_pos", "skipped_pos", "ptr_pos", "last_pos")
_LOG_SCHEMA: dict[str, pl.DataType] = {
    "uf": pl.UInt32(),
    "act": pl.UInt8(),
    "gs": pl.UInt32(),
    "ts": pl.Datetime("us", "UTC"),
    "data": pl.String(),
    "row_key": pl.Int64(),
}


def target_from_state(flows: pl.DataFrame, steps: pl.DataFrame, codes: Codes) -> Target:
    """A target known only as a state, without the events that set it: each user-flow of ``flows``
    (user_id, flow_slug, group_id and the flow state), its catalog steps' flags from ``steps``
    (missing: false). Every fact has no event of its own, so a request planned to it carries no time
    or data (the caller may take them from an earlier plan)."""
    f = (
        flows.sort(FLOW_KEY)
        .with_columns(codes.flow(pl.col("flow_slug")).alias("fl"))
        .with_columns(
            codes.flow_attr(pl.col("fl"), codes.counts, pl.Int64()).alias("step_count"),
            pl.int_range(pl.len(), dtype=pl.UInt32).alias("uf"),
            *(pl.lit(None, pl.UInt32).alias(c) for c in _FLOW_FACTS),
        )
        .with_columns((pl.col("step_count").cum_sum() - pl.col("step_count")).alias("grid_start"))
    )
    grid = (
        f.select("uf", *FLOW_KEY, "fl", pl.int_ranges(0, pl.col("step_count")).alias("step_index"))
        .explode("step_index")
        .drop_nulls("step_index")
        .with_columns((codes.offset_of(pl.col("fl")) + pl.col("step_index")).cast(pl.UInt32).alias("gs"))
    )
    grid = grid.with_columns(codes.step_of(grid.get_column("gs")).alias("step_id"))
    flags = steps.select(*STEP_KEY, *STEP_STATE_COLUMNS).unique(STEP_KEY, keep="first")
    s = (
        grid.join(flags, on=STEP_KEY, how="left", maintain_order="left")
        .with_columns(pl.col(*STEP_STATE_COLUMNS).fill_null(False))
        .with_columns(pl.lit(None, pl.UInt32).alias(c) for c in _STEP_FACTS)
        .select("user_id", "flow_slug", "step_id", "step_index", *STEP_STATE_COLUMNS, "uf", "gs", *_STEP_FACTS)
    )
    return Target(f, s, pl.DataFrame(schema=_LOG_SCHEMA), codes, subset=True)
