"""Wide tables (one row per user, a column per flow or step) unpivoted into events by the mapping's
``wide`` rules. Which columns match is decided once from the schema (column names, not data); the data
stays lazy: flag and time columns go through one ``unpivot``, list columns through ``explode``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

from transforms.columns import dtype_of, existing, resolve_column, text, time_multi
from transforms.schema import EVENT_SCHEMA, InputError
from transforms.source import column_exprs, flow_expr, step_columns
from transforms.spec import SourceMapping, WideRule

TRUE_WORDS = ["true", "t", "1", "yes", "y", "x", "done", "1.0"]
_UTC = pl.Datetime("us", "UTC")


@dataclass(frozen=True, slots=True)
class WideColumn:
    """One matched column: the rule it matched and the ids its name gives."""

    column: str
    rule: WideRule
    flow: str | None
    step: str | None
    time_column: str | None


def _template(rule: WideRule, column: str, groups: dict[str, str | None]) -> str | None:
    if rule.time is None or rule.value == "time":
        return None
    values = {k: v or "" for k, v in groups.items()}
    try:
        return rule.time.format(column=column, **values)
    except (KeyError, IndexError, ValueError) as exc:
        raise InputError(f"wide rule {rule.columns!r}: bad time template {rule.time!r}: {exc}") from exc


def match_columns(schema: pl.Schema, mapping: SourceMapping) -> list[WideColumn]:
    """The columns the rules match, in file order (the first matching rule wins). Columns that are a
    matched column's time column, or the mapping's id columns, are not events themselves."""
    reserved = {
        c for key in ("user", "group", "flow", "data", "event_id") for c in existing(schema, getattr(mapping, key))
    }
    found: list[WideColumn] = []
    for name in schema.names():
        if name in reserved:
            continue
        for rule in mapping.wide:
            m = re.search(rule.columns, name)
            if m is None:
                continue
            groups = m.groupdict()
            time_col = _template(rule, name, groups)
            found.append(WideColumn(name, rule, groups.get("flow"), groups.get("step"), time_col if time_col else None))
            break
    times = {w.time_column for w in found if w.time_column}
    return [w for w in found if w.column not in times]


def _truthy(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if dtype == pl.Boolean:
        return expr.fill_null(False)
    if dtype.is_numeric():
        return (expr != 0).fill_null(False)
    return expr.cast(pl.String).str.strip_chars().str.to_lowercase().is_in(TRUE_WORDS).fill_null(False)


def _time_of(
    schema: pl.Schema, name: str | None, mapping: SourceMapping, column: str, *, use_default: bool = True
) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(ts, ts_raw, reason) of a time column, or of the declared default_time when it is absent."""
    default = mapping.default_instant if use_default else None
    col = resolve_column(schema, name) if name else None
    if col is None or name is None:
        if default is None:
            raise InputError(
                f"wide column {column!r} has no time column ({name or 'none declared'} is not in the file) "
                "and the mapping declares no default_time: set default_time to the instant the table "
                "describes (nothing is guessed)",
                field=column,
            )
        return pl.lit(default, _UTC), pl.lit(default.isoformat(), pl.String), pl.lit(None, pl.String)
    ts, reason = time_multi(schema, col, name, mapping.time_formats, mapping.timezone)
    raw = text(col)
    if default is not None:
        ts = pl.when(raw.is_null()).then(pl.lit(default, _UTC)).otherwise(ts)
        raw = pl.coalesce(raw, pl.lit(default.isoformat(), pl.String))
    full_reason = (
        pl.when(raw.is_null())
        .then(pl.lit("missing time"))
        .when(ts.is_null())
        .then(pl.coalesce(reason, pl.lit("unparseable time")))
    )
    return ts, raw, full_reason


def _list_items(expr: pl.Expr, dtype: pl.DataType, separator: str) -> pl.Expr:
    """The elements of a list column, or of list text: ``["a","b"]``, ``{a,b}``, ``a,b`` and, with the
    default separator, ``a;b`` too."""
    if isinstance(dtype, pl.List | pl.Array):
        return expr.cast(pl.List(pl.String))
    cleaned = expr.cast(pl.String).str.strip_chars().str.strip_chars("[]{}()").str.replace_all(r"[\"']", "")
    if separator == ",":
        cleaned = cleaned.str.replace_all(";", ",", literal=True)
    return cleaned.str.split(separator)


def wide_events(lf: pl.LazyFrame, schema: pl.Schema, mapping: SourceMapping, source_file: str) -> pl.LazyFrame:
    """One event per set flag, time or list element, in the internal shape of ``transforms.derive``."""
    cols = column_exprs(schema, mapping, source_file, ("user", "group", "flow", "data"))
    matched = match_columns(schema, mapping)
    if not matched:
        raise InputError(
            "no column matches the mapping's wide rules "
            f"({', '.join(repr(r.columns) for r in mapping.wide)}); "
            f"columns: {', '.join(schema.names()[:30])}",
            file=source_file,
        )
    ids = [
        pl.col("__row").cast(pl.Int64).alias("source_row"),
        (cols["user"] if cols["user"] is not None else pl.lit(None, pl.String)).alias("user_id"),
        (cols["group"] if cols["group"] is not None else pl.lit(None, pl.String)).alias("group_id"),
        (cols["flow"] if cols["flow"] is not None else pl.lit(None, pl.String)).alias("__flow_col"),
        (cols["data"] if cols["data"] is not None else pl.lit(None, pl.String)).alias("data"),
    ]
    base = lf.with_row_index("__row", offset=1)
    frames: list[pl.LazyFrame] = []
    cells = [w for w in matched if w.rule.value != "list"]
    if cells:
        structs = []
        for i, w in enumerate(cells):
            col = pl.col(w.column)
            dtype = dtype_of(schema, w.column) or pl.String()
            if w.rule.value == "time":
                ts, raw, reason = _time_of(schema, w.column, mapping, w.column, use_default=False)
                hit = raw.is_not_null()
            else:
                ts, raw, reason = _time_of(schema, w.time_column, mapping, w.column)
                hit = _truthy(col, dtype)
            structs.append(
                pl.struct(
                    hit.alias("hit"),
                    ts.alias("ts"),
                    raw.alias("ts_raw"),
                    reason.cast(pl.String).alias("reason"),
                ).alias(f"__w{i}")
            )
        meta = pl.DataFrame(
            {
                "__col": [f"__w{i}" for i in range(len(cells))],
                "__flow_raw": [w.flow for w in cells],
                "__step_raw": [w.step for w in cells],
                "action": [w.rule.action for w in cells],
                "raw_event": [w.column for w in cells],
                "__seq": [matched.index(w) for w in cells],
            },
            schema={
                "__col": pl.String,
                "__flow_raw": pl.String,
                "__step_raw": pl.String,
                "action": pl.String,
                "raw_event": pl.String,
                "__seq": pl.Int64,
            },
        ).lazy()
        long = (
            base.select(*ids, *structs)
            .unpivot(
                on=[f"__w{i}" for i in range(len(cells))],
                index=["source_row", "user_id", "group_id", "__flow_col", "data"],
                variable_name="__col",
                value_name="__v",
            )
            .filter(pl.col("__v").struct.field("hit"))
            .join(meta, on="__col", how="inner")
            .select(
                "source_row",
                "user_id",
                "group_id",
                "__flow_col",
                "data",
                "__flow_raw",
                "__step_raw",
                "action",
                "raw_event",
                "__seq",
                pl.col("__v").struct.field("ts").alias("ts"),
                pl.col("__v").struct.field("ts_raw").alias("ts_raw"),
                pl.col("__v").struct.field("reason").alias("map_reason"),
            )
        )
        frames.append(long)
    for w in (w for w in matched if w.rule.value == "list"):
        seq = matched.index(w)
        dtype = dtype_of(schema, w.column) or pl.String()
        ts, raw, reason = _time_of(schema, w.time_column, mapping, w.column)
        items = _list_items(pl.col(w.column), dtype, w.rule.separator).alias("__item")
        exploded = (
            base.select(*ids, items, ts.alias("ts"), raw.alias("ts_raw"), reason.cast(pl.String).alias("map_reason"))
            .explode("__item")
            .with_columns(text(pl.col("__item")).alias("__item"))
            .filter(pl.col("__item").is_not_null())
        )
        item = pl.col("__item")
        frames.append(
            exploded.select(
                "source_row",
                "user_id",
                "group_id",
                "__flow_col",
                "data",
                (item if w.rule.list_of == "flow" else pl.lit(w.flow, pl.String)).alias("__flow_raw"),
                (item if w.rule.list_of == "step" else pl.lit(w.step, pl.String)).alias("__step_raw"),
                pl.lit(w.rule.action).alias("action"),
                pl.lit(w.column).alias("raw_event"),
                pl.lit(seq, pl.Int64).alias("__seq"),
                "ts",
                "ts_raw",
                "map_reason",
            )
        )
    events = pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]
    flow = flow_expr(pl.coalesce(pl.col("__flow_raw"), pl.col("__flow_col")), mapping)
    return events.select(
        pl.lit(source_file).alias("source_file"),
        "source_row",
        "user_id",
        "group_id",
        flow.alias("flow_slug"),
        *step_columns(pl.col("__step_raw"), flow, mapping),
        "action",
        "raw_event",
        "ts",
        "ts_raw",
        "data",
        pl.lit(None, pl.String).alias("event_id"),
        "map_reason",
        "__seq",
    ).select([*EVENT_SCHEMA, "__seq"])


__all__ = ["TRUE_WORDS", "WideColumn", "match_columns", "wide_events"]
