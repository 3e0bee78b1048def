"""Derivations: the events a source implies but does not write, switched on by mapping fields.

All lazy and vectorised; each stage takes and returns the internal event frame (the canonical
columns of ``transforms.schema`` plus ``__seq``, the event's place among the events of its source
row, and ``__tag``, which derivation made it).

- fan-out: an action map value ``A+B`` makes one event per action from the same row;
  ``once_per_flow`` keeps those actions of such rows only on a user's first one in a flow (Pendo:
  the first guideSeen also starts the flow);
- ``flow_actions_ignore_step``: flow actions from events that name a step keep no step;
- ``progress_step``: a state row (status + current step) becomes COMPLETED_STEP for each step
  before the current one and STARTED_STEP (or COMPLETED_STEP) for the current one;
- ``infer_previous_step_completed``: STARTED_STEP n implies COMPLETED_STEP n-1 (Userflow);
- ``last_step_completes_flow``: COMPLETED_STEP on the last step implies COMPLETED_FLOW (Pendo; a tour);
- ``all_steps_complete_flow``: COMPLETED_STEP on every step, in any order, implies COMPLETED_FLOW (a
  checklist); both for every flow or for the flows they list;
- ``completed_flow_completes_last_step``: COMPLETED_FLOW implies COMPLETED_STEP on the last step;
- ``drop_if_also``: one ending written as two (Userflow's flow_ended after flow_completed);
- ``flow_map: {id: DROP}``: every event of a flow the user left out is dropped by the mapping.

Derived events share their row's source_file / source_row. Their time is the row's time plus
``__seq`` microseconds, so that every later stage orders the events of one row the same way (the
canonical frame has no sub-row sequence), and a source event id gets a ``#kind:ACTION:step`` suffix
so that de-duplication on event ids does not fold a row's events into one.
"""

from __future__ import annotations

import polars as pl

from frigade.rules import FLOW_ACTIONS, STEP_ACTIONS, Action
from transforms.schema import DROP, EVENT_SCHEMA, FLOW_DROP, InputError
from transforms.source import flows_left_out
from transforms.spec import SourceMapping
from transforms.state import FLOW_KEY

A = Action
# as text, sorted: polars compares the action column with plain strings
_FLOW_NAMES = sorted(a.value for a in FLOW_ACTIONS)
_STEP_NAMES = sorted(a.value for a in STEP_ACTIONS)
INTERNAL = [*EVENT_SCHEMA, "__seq", "__tag"]
STEP_TABLE_SCHEMA: dict[str, pl.DataType] = {
    "flow_slug": pl.String(),
    "step_id": pl.String(),
    "step_index": pl.Int64(),
    "step_count": pl.Int64(),
}

# __seq bands: fan-out k in [0, 9], then each derivation its own value, progress steps 20 + index
_SEQ_PREVIOUS, _SEQ_LAST_FLOW, _SEQ_FLOW_LAST_STEP, _SEQ_ALL_DONE, _SEQ_PROGRESS = 10, 11, 12, 13, 20


def catalog_features(mapping: SourceMapping) -> list[str]:
    """The switched-on derivations that need the catalog's step order."""
    out = []
    if mapping.infer_previous_step_completed and mapping.step_by == "id":
        out.append("infer_previous_step_completed")
    if mapping.last_step_completes_flow:
        out.append("last_step_completes_flow")
    if mapping.all_steps_complete_flow:
        out.append("all_steps_complete_flow")
    if mapping.completed_flow_completes_last_step:
        out.append("completed_flow_completes_last_step")
    if mapping.progress_step:
        out.append("progress_step")
    return out


def _of_flows(setting: bool | tuple[str, ...]) -> pl.Expr:
    """Whether an event's flow is one a per-flow setting (true: all of them) names."""
    if isinstance(setting, bool):
        return pl.lit(setting)
    return pl.col("flow_slug").is_in(list(setting))


def _all_steps_done(pos: pl.LazyFrame, mapping: SourceMapping) -> pl.LazyFrame:
    """COMPLETED_FLOW for each user-flow whose every catalog step was completed, in any order, from
    the row of the last completion (by time, then row)."""
    done = pos.filter(
        (pl.col("action") == A.COMPLETED_STEP)
        & pl.col("__pos").is_not_null()
        # a completion whose time cannot be trusted is quarantined: it completes nothing
        & pl.col("ts").is_not_null()
        & pl.col("map_reason").is_null()
        & _of_flows(mapping.all_steps_complete_flow)
    )
    key = pl.struct(FLOW_KEY)
    last = (
        done.with_columns(pl.col("__pos").n_unique().over(FLOW_KEY).alias("__done"))
        .filter(pl.col("__done") == pl.col("__count"))
        .sort("ts", "source_file", "source_row", "__seq", nulls_last=True)
        .filter(key.is_last_distinct())
    )
    return _derived(last, A.COMPLETED_FLOW.value, _SEQ_ALL_DONE, "all").with_columns(
        pl.lit(None, pl.String).alias("step_id"), pl.lit(None, pl.Int64).alias("step_index")
    )


def _shape(lf: pl.LazyFrame) -> pl.LazyFrame:
    return lf.select(INTERNAL)


def fan_out(ev: pl.LazyFrame, combos: list[str]) -> pl.LazyFrame:
    """Declared ``A+B`` actions (``combos``) into one event per action, numbered in ``__seq``."""
    a = pl.col("action")
    parts = pl.when(a.is_in(combos)).then(a.str.split("+")).otherwise(pl.concat_list(a))
    return (
        ev.with_columns(
            parts.alias("action"),
            pl.int_ranges(0, parts.list.len()).alias("__k"),
            parts.list.len().alias("__n"),
        )
        .explode(["action", "__k"])
        .with_columns(
            (pl.col("__seq") + pl.col("__k").fill_null(0)).cast(pl.Int64).alias("__seq"),
            pl.when(pl.col("__n") > 1).then(pl.lit("fan")).otherwise(pl.col("__tag")).alias("__tag"),
        )
        .drop("__k", "__n")
    )


def _combos(mapping: SourceMapping) -> list[str]:
    """The ``A+B`` values the mapping declares (action maps, the constant action): only these make
    several events of one row; an event name in the data is never split."""
    maps = [mapping.action_map, *mapping.entity_action_map.values()]
    values = [mapping.action_constant or "", *(v for m in maps for v in m.values())]
    return sorted({v for v in values if "+" in v})


def _positions(ev: pl.LazyFrame, steps: pl.LazyFrame) -> pl.LazyFrame:
    """Add __pos (the step's 0-based place in its flow), __count and __last_id from the catalog."""
    by_id = steps.select("flow_slug", pl.col("step_id").alias("__sid"), pl.col("step_index").alias("__pid"))
    meta = steps.group_by("flow_slug").agg(
        pl.len().cast(pl.Int64).alias("__count"),
        pl.col("step_id").sort_by("step_index").last().alias("__last_id"),
    )
    return (
        ev.join(by_id, left_on=["flow_slug", "step_id"], right_on=["flow_slug", "__sid"], how="left")
        .join(meta, on="flow_slug", how="left")
        .with_columns(pl.coalesce("step_index", "__pid").alias("__pos"))
        .drop("__pid")
    )


def _id_at(frame: pl.LazyFrame, steps: pl.LazyFrame) -> pl.LazyFrame:
    """Set step_id from the catalog for the step_index each derived event names."""
    by_index = steps.select("flow_slug", pl.col("step_index").alias("__ix"), pl.col("step_id").alias("__id_at"))
    return (
        frame.join(by_index, left_on=["flow_slug", "step_index"], right_on=["flow_slug", "__ix"], how="left")
        .with_columns(pl.coalesce("__id_at", "step_id").alias("step_id"))
        .drop("__id_at")
    )


def _derived(frame: pl.LazyFrame, action: str, seq: int | pl.Expr, tag: str) -> pl.LazyFrame:
    return frame.with_columns(
        pl.lit(action).alias("action"),
        (seq if isinstance(seq, pl.Expr) else pl.lit(seq, pl.Int64)).cast(pl.Int64).alias("__seq"),
        pl.lit(tag).alias("__tag"),
    )


def _progress(ev: pl.LazyFrame, steps: pl.LazyFrame, mapping: SourceMapping) -> list[pl.LazyFrame]:
    """State rows: the flow event keeps no step; each catalog step up to the current one gets its event."""
    a = pl.col("action")
    has_step = pl.col("step_id").is_not_null() | pl.col("step_index").is_not_null()
    current = ev.filter(a.is_in(_FLOW_NAMES) & has_step & (pl.col("__seq") == 0))
    in_flow = (pl.col("__pos") >= 0) & (pl.col("__pos") < pl.col("__count"))
    known = current.filter(in_flow.fill_null(False))
    unknown = current.filter(~in_flow.fill_null(False))
    grid = steps.select("flow_slug", pl.col("step_id").alias("__cid"), pl.col("step_index").alias("__ci"))
    done = a.is_in(list(mapping.progress_current_done_when))
    steps_up_to = (
        known.join(grid, on="flow_slug", how="inner")
        .filter(pl.col("__ci") <= pl.col("__pos"))
        .with_columns(
            pl.when((pl.col("__ci") < pl.col("__pos")) | done)
            .then(pl.lit(A.COMPLETED_STEP.value))
            .otherwise(pl.lit(A.STARTED_STEP.value))
            .alias("action"),
            pl.col("__cid").alias("step_id"),
            pl.col("__ci").alias("step_index"),
            (pl.lit(_SEQ_PROGRESS, pl.Int64) + pl.col("__ci")).alias("__seq"),
            pl.lit("progress").alias("__tag"),
        )
        .drop("__cid", "__ci")
    )
    # A current step the catalog does not have still goes on, so validation quarantines it by name.
    unknown_step = _derived(unknown, A.STARTED_STEP.value, _SEQ_PROGRESS, "progress")
    return [steps_up_to, unknown_step]


def derive(ev: pl.LazyFrame, mapping: SourceMapping, steps: pl.LazyFrame | None) -> pl.LazyFrame:
    """Apply the mapping's derivations to the one-event-per-row frame of the mapping stage."""
    needs = catalog_features(mapping)
    if needs and steps is None:
        raise InputError(
            f"the mapping infers events from the catalog's step order ({', '.join(needs)}); "
            "it needs the flow catalog (--catalog)"
        )
    table = steps if steps is not None else pl.LazyFrame(schema=STEP_TABLE_SCHEMA)
    a = pl.col("action")
    has_seq = "__seq" in ev.collect_schema().names()
    seq = pl.col("__seq").cast(pl.Int64) if has_seq else pl.lit(0, pl.Int64)
    ev = ev.with_columns(seq.alias("__seq"), pl.lit(None, pl.String).alias("__tag"))
    ev = _shape(ev)
    left_out = flows_left_out(mapping)
    if left_out:
        # before any derivation: a flow the user left out implies nothing either
        ev = ev.with_columns(
            pl.when(pl.col("flow_slug").is_in(left_out)).then(pl.lit(FLOW_DROP)).otherwise(a).alias("action")
        )
    combos = _combos(mapping)
    if combos:
        ev = fan_out(ev, combos)
    if mapping.once_per_flow:
        first = (pl.col("ts") == pl.col("ts").min().over([*FLOW_KEY, "action"])).fill_null(True)
        fanned = pl.col("__tag") == "fan"
        ev = ev.filter(~(fanned & a.is_in(list(mapping.once_per_flow)) & ~first).fill_null(False))
    derivations = (
        mapping.progress_step
        or mapping.infer_previous_step_completed
        or mapping.last_step_completes_flow
        or mapping.all_steps_complete_flow
        or mapping.completed_flow_completes_last_step
    )
    extra: list[pl.LazyFrame] = []
    if derivations:
        pos = _positions(ev, table)
        if mapping.progress_step:
            extra += [_shape(f) for f in _progress(pos, table, mapping)]
        if mapping.infer_previous_step_completed:
            prev = pos.filter((a == A.STARTED_STEP) & (pl.col("__pos") > 0)).with_columns(
                (pl.col("__pos") - 1).alias("step_index"), pl.lit(None, pl.String).alias("step_id")
            )
            extra.append(_shape(_id_at(_derived(prev, A.COMPLETED_STEP.value, _SEQ_PREVIOUS, "prev"), table)))
        if mapping.last_step_completes_flow:
            last = pos.filter(
                (a == A.COMPLETED_STEP)
                & (pl.col("__pos") == pl.col("__count") - 1)
                & _of_flows(mapping.last_step_completes_flow)
            )
            extra.append(
                _shape(
                    _derived(last, A.COMPLETED_FLOW.value, _SEQ_LAST_FLOW, "flow").with_columns(
                        pl.lit(None, pl.String).alias("step_id"), pl.lit(None, pl.Int64).alias("step_index")
                    )
                )
            )
        if mapping.all_steps_complete_flow:
            extra.append(_shape(_all_steps_done(pos, mapping)))
        if mapping.completed_flow_completes_last_step:
            done = pos.filter((a == A.COMPLETED_FLOW) & pl.col("__count").is_not_null())
            extra.append(
                _shape(
                    _derived(done, A.COMPLETED_STEP.value, _SEQ_FLOW_LAST_STEP, "last").with_columns(
                        pl.col("__last_id").alias("step_id"), (pl.col("__count") - 1).alias("step_index")
                    )
                )
            )
    if mapping.flow_actions_ignore_step or mapping.progress_step:
        ev = ev.with_columns(
            pl.when(a.is_in(_FLOW_NAMES)).then(None).otherwise(pl.col("step_id")).alias("step_id"),
            pl.when(a.is_in(_FLOW_NAMES)).then(None).otherwise(pl.col("step_index")).alias("step_index"),
        )
    if extra:
        ev = pl.concat([ev, *extra], how="vertical")
    for dropped, other in mapping.drop_if_also.items():
        key = [*FLOW_KEY, "step_id"] if dropped in _STEP_NAMES and other in _STEP_NAMES else FLOW_KEY
        also = (a == other).any().over(key)
        ev = ev.with_columns(pl.when((a == dropped) & also).then(pl.lit(DROP)).otherwise(a).alias("action"))
    tagged = bool(combos) or bool(derivations)
    return finish(ev) if tagged or has_seq else ev.drop("__seq", "__tag")


def finish(ev: pl.LazyFrame) -> pl.LazyFrame:
    """Space a row's events by their __seq in microseconds and make derived event ids distinct."""
    tagged = pl.col("__tag").is_not_null() & pl.col("event_id").is_not_null()
    suffix = pl.concat_str(
        pl.lit("#"),
        pl.col("__tag"),
        pl.lit(":"),
        pl.col("action"),
        pl.lit(":"),
        pl.coalesce(pl.col("step_id"), pl.col("step_index").cast(pl.String), pl.lit("")),
    )
    return ev.with_columns(
        (pl.col("ts") + pl.duration(microseconds=pl.col("__seq"))).alias("ts"),
        pl.when(tagged).then(pl.col("event_id") + suffix).otherwise(pl.col("event_id")).alias("event_id"),
    ).drop("__seq", "__tag")
