"""Long tables (one event per row) into events: the mapping's columns, event names and times.

Event names go through prefixes, ``event_pattern`` splitting (named groups supply the flow, step or
entity), per-entity maps and non-state patterns; times through the declared formats and zone. The
result is in the internal shape of ``transforms.derive``, which adds the events a row implies.
"""

from __future__ import annotations

from dataclasses import replace

import polars as pl

from transforms.columns import existing, text, text_of, time_columns
from transforms.schema import DROP
from transforms.source import (
    action_expr,
    column_exprs,
    flow_expr,
    glob_match,
    missing_column,
    null_text,
    pattern_groups,
    step_columns,
)
from transforms.spec import SourceMapping

__all__ = ["row_events"]


def row_events(lf: pl.LazyFrame, schema: pl.Schema, mapping: SourceMapping, source_file: str) -> pl.LazyFrame:
    """One event per row (before derivations), in the internal shape of ``transforms.derive``."""
    step_field = "progress_step" if mapping.progress_step else "step"
    cols = column_exprs(schema, mapping, source_file, ("user", "group", "flow", "action", "data", "event_id", "entity"))
    step_src = text_of(schema, getattr(mapping, step_field), coalesce="step" in mapping.coalesce)
    if step_src is None and "step" in mapping.required:
        raise missing_column(mapping, step_field, schema, source_file)
    # Each source column's text is computed once, as a column: the expressions below read it many
    # times (polars does not share them inside when/then chains).
    staged = {k: e for k, e in (*cols.items(), ("step", step_src)) if e is not None}
    lf = lf.with_columns(e.alias(f"__text_{k}") for k, e in staged.items())
    cols = {k: (pl.col(f"__text_{k}") if k in staged else None) for k in cols}
    step_src = pl.col("__text_step") if step_src is not None else None
    if not existing(schema, mapping.time) and "time" in mapping.required and mapping.default_time is None:
        raise missing_column(mapping, "time", schema, source_file)
    lf, ts, ts_raw, reason = time_columns(
        lf,
        schema,
        mapping.time,
        mapping.time_formats,
        mapping.timezone,
        coalesce="time" in mapping.coalesce,
        default=mapping.default_instant,
    )
    raw_event = (
        pl.lit(mapping.action_constant, pl.String)
        if mapping.action_constant
        else cols["action"]
        if cols["action"] is not None
        else null_text()
    )
    name = raw_event
    for prefix in sorted(mapping.strip_prefixes, key=len, reverse=True):
        name = name.str.strip_prefix(prefix)
    flow_raw, step_raw, entity = cols["flow"], step_src, cols["entity"]
    if mapping.event_pattern:
        groups = pattern_groups(mapping)
        parts = name.str.extract_groups(mapping.event_pattern)

        def part(g: str, other: pl.Expr | None) -> pl.Expr | None:
            if g not in groups:
                return other
            got = text(parts.struct.field(g))
            return got if other is None else pl.coalesce(got, other)

        flow_raw, step_raw, entity = part("flow", flow_raw), part("step", step_raw), part("entity", entity)
        event = part("event", None) if "event" in groups else name
        assert event is not None
        action = action_expr(event, replace(mapping, strip_prefixes=()), entity, name)
    else:
        action = action_expr(name, replace(mapping, strip_prefixes=()), entity)
    flow = flow_expr(flow_raw, mapping)
    if mapping.record_type and mapping.record_types:
        kind = text_of(schema, mapping.record_type)
        if kind is not None:
            keep = kind.is_in(list(mapping.record_types)).fill_null(False)
            action = pl.when(keep).then(action).otherwise(pl.lit(DROP))
            raw_event = pl.when(keep).then(raw_event).otherwise(pl.coalesce(raw_event, kind))
    user = cols["user"] if cols["user"] is not None else null_text()
    reject = glob_match(user, mapping.reject_users)
    if reject is not None:
        # the id itself stays in the row (user_id), not in the words: one reason for every such row
        anonymous = pl.lit("anonymous user id (reject_users: the source marks it as a visitor who never signed in)")
        reason = pl.when(reject).then(anonymous).otherwise(reason)
    return lf.with_row_index("__row", offset=1).select(
        pl.lit(source_file).alias("source_file"),
        pl.col("__row").cast(pl.Int64).alias("source_row"),
        user.alias("user_id"),
        (cols["group"] if cols["group"] is not None else null_text()).alias("group_id"),
        flow.alias("flow_slug"),
        *step_columns(step_raw if step_raw is not None else null_text(), flow, mapping),
        action.alias("action"),
        raw_event.alias("raw_event"),
        ts.alias("ts"),
        ts_raw.alias("ts_raw"),
        (cols["data"] if cols["data"] is not None else null_text()).alias("data"),
        (cols["event_id"] if cols["event_id"] is not None else null_text()).alias("event_id"),
        reason.alias("map_reason"),
    )
