"""Home-grown state tables into events: one row per user and item (a checklist's item, a tour's step)
with a column per status, each holding a time or a flag (``state_table`` in the mapping).

A row with an item is about that step: started -> STARTED_STEP, completed -> COMPLETED_STEP, dismissed
-> SKIPPED_STEP; a row without one is about the whole flow: STARTED_FLOW, COMPLETED_FLOW, SKIPPED_FLOW.
A cell is a time (the event at that time), a true flag (``t``, ``true``, ``1``, ``yes``, a boolean or a
non-zero number) or nothing (empty, a false flag). A table records each user's current state, so a flag
is at the row's own time column (``state_table: {time: ...}``) when there is one, else at the latest time
written in that user and flow's rows: a dismissed flag is the flow's latest status, never older than the
progress beside it. Where neither exists, ``default_time``; else the row is quarantined (missing time).

The events are in the internal shape of ``transforms.derive``, where the completion rules of each flow
(``all_steps_complete_flow``, ``last_step_completes_flow``) apply. Lazy throughout: the status columns
go through one ``unpivot``.
"""

from __future__ import annotations

import polars as pl

from frigade.rules import Action
from transforms.columns import dtype_of, existing, resolve_column, text, text_of, time_multi
from transforms.schema import EVENT_SCHEMA, InputError
from transforms.source import column_exprs, flow_expr, step_columns
from transforms.spec import SourceMapping
from transforms.wide import TRUE_WORDS

__all__ = ["FALSE_WORDS", "STATUSES", "state_table_events"]

A = Action
FALSE_WORDS = ["false", "f", "0", "no", "n", "0.0"]
#: status -> (action on a row with an item, action on a row about the whole flow); the order is the
#: order a row's own events take when they share a time
STATUSES: dict[str, tuple[Action, Action]] = {
    "started": (A.STARTED_STEP, A.STARTED_FLOW),
    "completed": (A.COMPLETED_STEP, A.COMPLETED_FLOW),
    "dismissed": (A.SKIPPED_STEP, A.SKIPPED_FLOW),
}
_UTC = pl.Datetime("us", "UTC")
_NO_TIME = (
    "missing time: a flag with no time (no state_table time column, and no time in this user and flow's "
    "rows); set default_time to the instant the table describes"
)


def _cell(schema: pl.Schema, name: str, mapping: SourceMapping) -> pl.Expr:
    """One status cell as a struct: hit (the status is set), flag (set without a time of its own), its
    own time, that time's text and the reason it cannot be trusted."""
    col = resolve_column(schema, name)
    assert col is not None
    dtype = dtype_of(schema, name) or pl.String()
    no_ts, no_text = pl.lit(None, _UTC), pl.lit(None, pl.String)
    if dtype == pl.Boolean or dtype.is_numeric():
        flag = col.fill_null(False) if dtype == pl.Boolean else (col != 0).fill_null(False)
        parts = [flag.alias("hit"), flag.alias("flag"), no_ts.alias("own"), no_text.alias("raw"), no_text]
    elif dtype.is_temporal():
        ts, reason = time_multi(schema, col, name, mapping.time_formats, mapping.timezone)
        parts = [col.is_not_null().alias("hit"), pl.lit(False).alias("flag"), ts.alias("own"), no_text.alias("raw")]
        parts.append(reason.cast(pl.String))
    else:
        value = text(col)
        word = value.str.to_lowercase()
        is_true, is_false = word.is_in(TRUE_WORDS), word.is_in(FALSE_WORDS)
        is_time = ~is_true & ~is_false
        ts, reason = time_multi(schema, col, name, mapping.time_formats, mapping.timezone)
        own = pl.when(is_time).then(ts)
        unread = pl.when(is_time & ts.is_null()).then(pl.coalesce(reason, pl.lit("unparseable time")))
        parts = [
            (value.is_not_null() & ~is_false).fill_null(False).alias("hit"),
            is_true.fill_null(False).alias("flag"),
            own.alias("own"),
            pl.when(is_time).then(value).alias("raw"),
            unread.cast(pl.String),
        ]
    return pl.struct(*parts[:4], parts[4].alias("reason"))


def _row_time(schema: pl.Schema, mapping: SourceMapping, source_file: str) -> pl.Expr:
    """The row's own time for its flags (``state_table: {time: ...}``), or null."""
    names = mapping.state_table.get("time", ())
    if not names:
        return pl.lit(None, _UTC)
    found = existing(schema, names)
    if not found:
        raise InputError(
            f"missing column: none of {', '.join(repr(n) for n in names)} (state_table time) is in the file "
            f"(columns: {', '.join(schema.names()[:30])})",
            file=source_file,
            field=names[0],
        )
    col = resolve_column(schema, found[0])
    assert col is not None
    return time_multi(schema, col, found[0], mapping.time_formats, mapping.timezone)[0]


def state_table_events(lf: pl.LazyFrame, schema: pl.Schema, mapping: SourceMapping, source_file: str) -> pl.LazyFrame:
    """One event per set status of each row, in the internal shape of ``transforms.derive``."""
    statuses = [(k, found[0]) for k in STATUSES if (found := existing(schema, mapping.state_table.get(k, ())))]
    if not statuses:
        named = [c for k in STATUSES for c in mapping.state_table.get(k, ())]
        raise InputError(
            f"none of the state_table columns ({', '.join(repr(c) for c in named) or 'none named'}) is in the "
            f"file (columns: {', '.join(schema.names()[:30])})",
            file=source_file,
            field="state_table",
        )
    cols = column_exprs(schema, mapping, source_file, ("user", "group", "flow", "data", "event_id"))
    item = text_of(schema, mapping.step, coalesce="step" in mapping.coalesce)
    null_text = pl.lit(None, pl.String)
    ids = {
        "user_id": cols["user"],
        "group_id": cols["group"],
        "__flow_raw": cols["flow"],
        "__step_raw": item,
        "data": cols["data"],
        "__event_id": cols["event_id"],
    }
    index = [pl.col("__row").cast(pl.Int64).alias("source_row"), _row_time(schema, mapping, source_file).alias("__at")]
    index += [(e if e is not None else null_text).alias(n) for n, e in ids.items()]
    cells = [_cell(schema, name, mapping).alias(status) for status, name in statuses]
    order = {status: k for k, status in enumerate(STATUSES)}
    long = (
        lf.with_row_index("__row", offset=1)
        .select(*index, *cells)
        .unpivot(on=[s for s, _ in statuses], index=[e.meta.output_name() for e in index], variable_name="__status")
        .filter(pl.col("value").struct.field("hit"))
        .unnest("value")
    )
    flow = flow_expr(pl.col("__flow_raw"), mapping)
    # a flag is at the row's own time, else at the latest time of this user and flow's rows
    latest = pl.col("own").max().over("user_id", "__flow_raw")
    default = mapping.default_instant
    flag_ts = pl.coalesce(pl.col("__at"), latest, pl.lit(default, _UTC) if default else pl.lit(None, _UTC))
    ts = pl.when(pl.col("flag")).then(flag_ts).otherwise(pl.col("own"))
    reason = pl.when(pl.col("flag") & flag_ts.is_null()).then(pl.lit(_NO_TIME)).otherwise(pl.col("reason"))
    has_item = pl.col("__step_raw").is_not_null()
    action: pl.Expr = null_text
    for status, (on_step, on_flow) in STATUSES.items():
        chosen = pl.when(has_item).then(pl.lit(on_step.value)).otherwise(pl.lit(on_flow.value))
        action = pl.when(pl.col("__status") == status).then(chosen).otherwise(action)
    seq = pl.col("__status").replace_strict(order, return_dtype=pl.Int64)
    return long.select(
        pl.lit(source_file).alias("source_file"),
        "source_row",
        "user_id",
        "group_id",
        flow.alias("flow_slug"),
        *step_columns(pl.col("__step_raw"), flow, mapping),
        action.alias("action"),
        pl.col("__status").alias("raw_event"),
        ts.alias("ts"),
        pl.col("raw").alias("ts_raw"),
        "data",
        # the row's id names the row: each of its events gets its status, so de-duplication keeps them apart
        pl.when(pl.col("__event_id").is_not_null())
        .then(pl.format("{}#{}", "__event_id", "__status"))
        .alias("event_id"),
        reason.alias("map_reason"),
        seq.alias("__seq"),
    ).select([*EVENT_SCHEMA, "__seq"])
