"""Source mappings: data that says how an export's columns become canonical events.

A mapping is plain data (a YAML file, a built-in preset, or command-line flags), never code per tool.
Column references may be nested: ``properties.flow_id`` reads field ``flow_id`` of a struct column
``properties`` or of a JSON-text column of that name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import polars as pl

from frigade.rules import Action
from transforms.schema import DROP, InputError, conform

TIME_FORMATS = ("iso", "epoch_s", "epoch_ms", "epoch_us")
STEP_BY = ("id", "index0", "index1")


@dataclass(frozen=True, slots=True)
class SourceMapping:
    """How one export shape maps onto canonical events. Each column field lists candidate names:
    the first that exists in the file is used (``properties.x`` paths allowed)."""

    name: str = "long"
    user: tuple[str, ...] = ("user_id", "userId")
    group: tuple[str, ...] = ("group_id", "groupId")
    flow: tuple[str, ...] = ("flow_slug", "flowSlug", "flow_id", "flow")
    flow_constant: str | None = None
    flow_map: Mapping[str, str] = field(default_factory=dict)
    step: tuple[str, ...] = ("step_id", "stepId", "step")
    step_by: str = "id"
    step_map: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    action: tuple[str, ...] = ("action", "action_type", "actionType", "event")
    action_map: Mapping[str, str] = field(default_factory=dict)
    strip_prefixes: tuple[str, ...] = ()
    #: raw events absent from action_map (and not Frigade action names): drop as non-state, or quarantine
    unmapped: str = "quarantine"
    time: tuple[str, ...] = ("created_at", "createdAt", "timestamp", "time")
    time_format: str = "iso"
    timezone: str | None = None
    data: tuple[str, ...] = ("data",)
    event_id: tuple[str, ...] = ("event_id", "eventId", "message_id", "messageId", "insert_id", "$insert_id")
    #: the columns that must exist (by field name); the rest are optional and null when absent
    required: tuple[str, ...] = ("user", "flow", "action", "time")

    def __post_init__(self) -> None:
        if self.time_format not in TIME_FORMATS and "%" not in self.time_format:
            raise InputError(
                f"time format {self.time_format!r} is not one of {', '.join(TIME_FORMATS)} "
                "or a strftime pattern"
            )
        if self.step_by not in STEP_BY:
            raise InputError(f"step_by {self.step_by!r} is not one of {', '.join(STEP_BY)}")
        if self.unmapped not in ("quarantine", "drop"):
            raise InputError(f"unmapped {self.unmapped!r} must be 'quarantine' or 'drop'")
        known = {a.value for a in Action} | {DROP}
        bad = sorted({v for v in self.action_map.values() if v not in known})
        if bad:
            raise InputError(f"action_map maps to unknown actions: {', '.join(bad)}")


_TUPLE_FIELDS = {
    "user",
    "group",
    "flow",
    "step",
    "action",
    "time",
    "data",
    "event_id",
    "strip_prefixes",
    "required",
}


def mapping_from_dict(
    doc: Mapping[str, Any], *, base: SourceMapping | None = None, where: str = "mapping"
) -> SourceMapping:
    """Build a mapping from YAML-shaped data, overriding ``base`` (a preset) field by field."""
    base = base or SourceMapping()
    names = {f.name for f in fields(SourceMapping)}
    unknown = sorted(set(doc) - names)
    if unknown:
        raise InputError(f"{where}: unknown keys {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    changes: dict[str, Any] = {}
    for key, value in doc.items():
        if key in _TUPLE_FIELDS:
            changes[key] = (value,) if isinstance(value, str) else tuple(str(v) for v in value or ())
        elif key in ("flow_map", "action_map"):
            changes[key] = {str(k): str(v) for k, v in (value or {}).items()}
        elif key == "step_map":
            changes[key] = {str(f): {str(k): str(v) for k, v in m.items()} for f, m in (value or {}).items()}
        else:
            changes[key] = value
    try:
        return replace(base, **changes)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from exc


# ---------------------------------------------------------------- column resolution


def _resolve(schema: pl.Schema, candidates: Sequence[str]) -> pl.Expr | None:
    """The expression for the first candidate column that exists, as text or typed."""
    for name in candidates:
        if name in schema:
            return pl.col(name)
        head, _, rest = name.partition(".")
        if rest and head in schema:
            dtype = schema[head]
            if isinstance(dtype, pl.Struct):
                expr = pl.col(head)
                for part in rest.split("."):
                    expr = expr.struct.field(part)
                return expr
            if dtype == pl.String:
                return pl.col(head).str.json_path_match(f"$.{rest}")
    return None


def _text(expr: pl.Expr) -> pl.Expr:
    """Trimmed text, with empty strings as null: an empty id is no id."""
    t = expr.cast(pl.String).str.strip_chars()
    return pl.when(t.str.len_chars() > 0).then(t)


# ---------------------------------------------------------------- time


def _naive_reason(tz: str | None) -> pl.Expr:
    return pl.lit(None if tz else "time has no zone and the source declares none (set timezone)")


def time_exprs(
    schema: pl.Schema, col: pl.Expr, name: str, fmt: str, tz: str | None
) -> tuple[pl.Expr, pl.Expr]:
    """(ts as UTC datetime, reason when it cannot be trusted) for a time column of any dtype.

    Naive times become UTC only through a declared zone: nothing is guessed silently."""
    dtype = schema[name.partition(".")[0]] if name.partition(".")[0] in schema else pl.String()
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone:
            ts = col.dt.convert_time_zone("UTC")
            return ts.dt.cast_time_unit("us"), pl.lit(None, pl.String)
        if tz:
            return col.dt.replace_time_zone(tz).dt.convert_time_zone("UTC").dt.cast_time_unit("us"), pl.lit(
                None
            )
        return pl.lit(None, pl.Datetime("us", "UTC")), _naive_reason(tz)
    if isinstance(dtype, pl.Date):
        return _localize(col.cast(pl.Datetime("us")), tz)
    if fmt.startswith("epoch_") or dtype.is_numeric():
        if not fmt.startswith("epoch_"):
            raise InputError(
                "the time column is numeric; declare its unit as time_format epoch_s, epoch_ms or epoch_us",
                field=name,
            )
        scale = {"epoch_s": 1_000_000, "epoch_ms": 1_000, "epoch_us": 1}[fmt]
        micros = (col.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False) * scale).round(0)
        ts = pl.from_epoch(micros.cast(pl.Int64, strict=False), time_unit="us").dt.replace_time_zone("UTC")
        return ts, pl.lit(None, pl.String)
    text = col.cast(pl.String).str.strip_chars()
    if "%" in fmt:
        if "%z" in fmt or "%:z" in fmt or "%#z" in fmt:
            aware = text.str.to_datetime(fmt, strict=False, time_zone="UTC", time_unit="us")
            return aware, pl.lit(None, pl.String)
        return _localize(text.str.to_datetime(fmt, strict=False, time_unit="us"), tz)
    iso = text.str.replace(r"[Zz]$", "+00:00").str.replace(" ", "T", literal=True)
    aware = pl.coalesce(
        iso.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%:z", strict=False, time_zone="UTC", time_unit="us"),
        iso.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", strict=False, time_zone="UTC", time_unit="us"),
    )
    naive = pl.coalesce(
        iso.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False, time_unit="us"),
        iso.str.to_datetime("%Y-%m-%dT%H:%M", strict=False, time_unit="us"),
        iso.str.to_datetime("%Y-%m-%d", strict=False, time_unit="us"),
    )
    local_ts, local_reason = _localize(naive, tz)
    ts = pl.coalesce(aware, local_ts)
    reason = pl.when(aware.is_null() & naive.is_not_null()).then(local_reason)
    return ts, reason


def _localize(naive: pl.Expr, tz: str | None) -> tuple[pl.Expr, pl.Expr]:
    if tz:
        ts = naive.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null").dt.convert_time_zone(
            "UTC"
        )
        return ts, pl.lit(None, pl.String)
    return pl.lit(None, pl.Datetime("us", "UTC")), pl.when(naive.is_not_null()).then(_naive_reason(tz))


# ---------------------------------------------------------------- actions


def action_expr(raw: pl.Expr, mapping: SourceMapping) -> pl.Expr:
    """Raw event name -> Frigade action, DROP, or the raw name (unknown: quarantined later)."""
    name = raw
    for prefix in sorted(mapping.strip_prefixes, key=len, reverse=True):
        name = name.str.strip_prefix(prefix)
    known = {a.value: a.value for a in Action}
    table = {**known, **{k: v for k, v in mapping.action_map.items()}}
    mapped = name.replace_strict(list(table), list(table.values()), default=None, return_dtype=pl.String)
    fallback = pl.lit(DROP) if mapping.unmapped == "drop" else raw
    return pl.when(raw.is_null()).then(None).otherwise(pl.coalesce(mapped, fallback))


# ---------------------------------------------------------------- the mapping itself


def map_events(lf: pl.LazyFrame, mapping: SourceMapping, source_file: str) -> pl.LazyFrame:
    """Map one export (lazily) into the canonical event frame. Raises InputError, naming the file
    and field, when a required column is missing."""
    schema = lf.collect_schema()
    cols: dict[str, pl.Expr | None] = {}
    for key in ("user", "group", "flow", "step", "action", "time", "data", "event_id"):
        cands: tuple[str, ...] = getattr(mapping, key)
        expr = _resolve(schema, cands)
        if expr is None and key in mapping.required and not (key == "flow" and mapping.flow_constant):
            raise InputError(
                f"missing column: none of {', '.join(repr(c) for c in cands)} is in the file "
                f"(columns: {', '.join(schema.names()[:30])})",
                file=source_file,
                field=cands[0] if cands else key,
            )
        cols[key] = expr
    time_name = (
        next(c for c in mapping.time if _resolve(schema, (c,)) is not None)
        if cols["time"] is not None
        else ""
    )
    ts, ts_reason = (
        time_exprs(schema, cols["time"], time_name, mapping.time_format, mapping.timezone)
        if cols["time"] is not None
        else (pl.lit(None, pl.Datetime("us", "UTC")), pl.lit("no time column"))
    )
    raw_time = _text(cols["time"]) if cols["time"] is not None else pl.lit(None, pl.String)
    raw_event = _text(cols["action"]) if cols["action"] is not None else pl.lit(None, pl.String)
    flow = (
        pl.lit(mapping.flow_constant)
        if mapping.flow_constant
        else _text(cols["flow"])
        if cols["flow"] is not None
        else pl.lit(None, pl.String)
    )
    if mapping.flow_map:
        flow = flow.replace(dict(mapping.flow_map))
    step = _text(cols["step"]) if cols["step"] is not None else pl.lit(None, pl.String)
    out = lf.with_row_index("__row", offset=1).select(
        pl.lit(source_file).alias("source_file"),
        pl.col("__row").cast(pl.Int64).alias("source_row"),
        _text(cols["user"]).alias("user_id")
        if cols["user"] is not None
        else pl.lit(None, pl.String).alias("user_id"),
        (_text(cols["group"]) if cols["group"] is not None else pl.lit(None, pl.String)).alias("group_id"),
        flow.alias("flow_slug"),
        *_step_columns(step, flow, mapping),
        action_expr(raw_event, mapping).alias("action"),
        raw_event.alias("raw_event"),
        ts.alias("ts"),
        raw_time.alias("ts_raw"),
        (_text(cols["data"]) if cols["data"] is not None else pl.lit(None, pl.String)).alias("data"),
        (_text(cols["event_id"]) if cols["event_id"] is not None else pl.lit(None, pl.String)).alias(
            "event_id"
        ),
        pl.when(raw_time.is_null())
        .then(pl.lit("missing time"))
        .when(ts.is_null() & ts_reason.is_null())
        .then(pl.lit("unparseable time"))
        .otherwise(ts_reason)
        .alias("map_reason"),
    )
    return conform(out)


def _step_columns(step: pl.Expr, flow: pl.Expr, mapping: SourceMapping) -> list[pl.Expr]:
    """step_id keeps the source's text (mapped through a per-flow step map) so messages can name it;
    step_index is set when the source counts steps by position."""
    if mapping.step_map:
        mapped: pl.Expr = step
        for slug, table in mapping.step_map.items():
            mapped = pl.when(flow == slug).then(step.replace(dict(table))).otherwise(mapped)
        step = mapped
    if mapping.step_by == "id":
        return [step.alias("step_id"), pl.lit(None, pl.Int64).alias("step_index")]
    offset = 1 if mapping.step_by == "index1" else 0
    index = step.cast(pl.Float64, strict=False).cast(pl.Int64, strict=False) - offset
    return [step.alias("step_id"), index.alias("step_index")]
