"""Source mappings: data that says how an export's columns become canonical events.

A mapping is plain data (a YAML file, a built-in preset, or command-line flags), never code per tool.
Column references may be nested: ``properties.flow_id`` reads field ``flow_id`` of a struct column
``properties`` or of a JSON-text column of that name.

``map_events`` runs three stages, all lazy:
1. rows -> events: columns, event names (prefixes, ``event_pattern`` splitting, per-entity maps,
   non-state patterns), times (declared formats and zone); or, for a wide table, the unpivot of the
   columns that ``wide`` rules match (``transforms.wide``);
2. derivations (``transforms.derive``): one row into several events (``A+B`` in an action map),
   inferred completions, state rows into the events that produce the state, declared conflations;
3. the canonical frame of ``transforms.schema``.

Every field is documented in ``transforms/presets/README.md``.
"""

from __future__ import annotations

import difflib
import re
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from frigade.rules import Action
from transforms.columns import (
    TIME_FORMATS,
    existing,
    parse_instant,
    resolve_column,
    text,
    text_of,
    time_columns,
    time_exprs,
)
from transforms.schema import DROP, InputError, conform

__all__ = [
    "STEP_BY",
    "TIME_FORMATS",
    "SourceMapping",
    "WideRule",
    "action_expr",
    "glob_match",
    "glob_regex",
    "map_events",
    "mapping_from_dict",
    "refuse_aggregates",
    "time_exprs",
]

STEP_BY = ("id", "index0", "index1")
WIDE_VALUES = ("flag", "time", "list")
_ACTIONS = frozenset(a.value for a in Action)
_FLOW_ACTIONS = frozenset(a.value for a in Action if not a.is_step)
#: fields whose candidate columns may be coalesced row by row
COALESCE_FIELDS = ("user", "group", "flow", "step", "time", "data", "event_id", "entity")


@dataclass(frozen=True, slots=True)
class WideRule:
    """One family of columns of a wide table (one row per user) and the event a set value means.

    ``columns`` is a regular expression over column names; its named groups ``flow`` and ``step``
    give the ids (otherwise the mapping's flow column or ``flow_constant`` gives the flow).
    ``value``: ``flag`` (true/1/yes/t/y/x), ``time`` (any non-empty time: the event at that time) or
    ``list`` (a list column, or text such as ``["a","b"]``, ``{a,b}`` or ``a;b``, of ``list_of`` ids:
    one event per element). ``time`` names the flag's time column as a template over the groups and
    ``{column}``; absent columns fall back to the mapping's ``default_time``."""

    columns: str
    action: str
    value: str = "flag"
    time: str | None = "{column}_at"
    list_of: str = "flow"
    separator: str = ","

    def __post_init__(self) -> None:
        try:
            re.compile(self.columns)
        except re.error as exc:
            raise InputError(f"wide rule {self.columns!r} is not a regular expression: {exc}") from exc
        if self.action not in _ACTIONS:
            raise InputError(f"wide rule {self.columns!r}: unknown action {self.action!r}")
        if self.value not in WIDE_VALUES:
            raise InputError(f"wide rule {self.columns!r}: value must be one of {', '.join(WIDE_VALUES)}")
        if self.list_of not in ("flow", "step"):
            raise InputError(f"wide rule {self.columns!r}: list_of must be 'flow' or 'step'")


@dataclass(frozen=True, slots=True)
class SourceMapping:
    """How one export shape maps onto canonical events. Each column field lists candidate names:
    the first that exists in the file is used (``properties.x`` paths allowed), or, for fields named
    in ``coalesce``, the first non-empty one on each row."""

    name: str = "long"
    description: str = ""
    user: tuple[str, ...] = ("user_id", "userId")
    group: tuple[str, ...] = ("group_id", "groupId")
    flow: tuple[str, ...] = ("flow_slug", "flowSlug", "flow_id", "flow")
    flow_constant: str | None = None
    flow_map: Mapping[str, str] = field(default_factory=dict)
    step: tuple[str, ...] = ("step_id", "stepId", "step")
    step_by: str = "id"
    step_map: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    action: tuple[str, ...] = ("action", "action_type", "actionType", "event")
    #: every row has this event name (a table of completions has no event column)
    action_constant: str | None = None
    #: raw event name -> Frigade action, DROP, or several actions joined by '+' (one row, several events)
    action_map: Mapping[str, str] = field(default_factory=dict)
    strip_prefixes: tuple[str, ...] = ()
    #: a regular expression over the event name whose named groups entity / flow / step / event split
    #: names such as Userpilot's ``flow:123:COMPLETED``; ``event`` is then what the action maps read
    event_pattern: str | None = None
    #: a column naming the kind of thing an event is about (flow, checklist, step ...)
    entity: tuple[str, ...] = ()
    #: per entity, event name -> action; tried before ``action_map``
    entity_action_map: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: event names (``*`` / ``?`` globs, matched after prefixes are stripped) that are known non-state
    drop_events: tuple[str, ...] = ()
    #: raw events absent from action_map (and not Frigade action names): drop as non-state, or quarantine
    unmapped: str = "quarantine"
    #: a column with the record's type (Segment ``type``) and the types that carry events; other
    #: records are dropped as non-state
    record_type: tuple[str, ...] = ()
    record_types: tuple[str, ...] = ()
    time: tuple[str, ...] = ("created_at", "createdAt", "timestamp", "time")
    time_format: str = "iso"
    #: further formats tried, in order, where ``time_format`` does not parse (e.g. ISO, then epoch_ms)
    extra_time_formats: tuple[str, ...] = ()
    timezone: str | None = None
    #: an ISO-8601 instant with zone used for rows (or wide columns) with no time at all
    default_time: str | None = None
    data: tuple[str, ...] = ("data",)
    event_id: tuple[str, ...] = ("event_id", "eventId", "message_id", "messageId", "insert_id", "$insert_id")
    #: user ids the source marks as anonymous (``*`` / ``?`` globs, e.g. Mixpanel's ``$device:*``, Pendo's
    #: ``_PENDO_T_*``): such rows are quarantined ("anonymous user id"), never sent
    reject_users: tuple[str, ...] = ()
    #: user ids are used exactly as written; true strips leading and trailing whitespace first
    trim_user_ids: bool = False
    #: times before this instant are quarantined (an epoch unit mix-up reads as 1970)
    earliest_time: str = "2000-01-01T00:00:00Z"
    #: times further ahead of now than this (``90s``, ``30m``, ``6h``, ``1d``) are quarantined
    max_future: str = "1d"
    #: each row is a user's whole current state of one flow (a state export): of a user and flow's rows,
    #: only the one with the latest time counts, the others are superseded (counted as redundant)
    state_rows: bool = False
    #: column fields whose candidates are coalesced row by row (e.g. ``user`` for userId else anonymousId)
    coalesce: tuple[str, ...] = ()
    #: the columns that must exist (by field name); the rest are optional and null when absent
    required: tuple[str, ...] = ("user", "flow", "action", "time")
    # ---- derivations (transforms.derive)
    #: flow actions mapped from events that also name a step keep no step (vendor events carry context)
    flow_actions_ignore_step: bool = False
    #: actions that a multi-action map adds only on the first such event of a user and flow (by time)
    once_per_flow: tuple[str, ...] = ()
    #: STARTED_STEP on step n (n > 0) also means COMPLETED_STEP on step n-1 (Userflow)
    infer_previous_step_completed: bool = False
    #: COMPLETED_STEP on the flow's last step (catalog order) also means COMPLETED_FLOW (Pendo)
    last_step_completes_flow: bool = False
    #: COMPLETED_FLOW also means COMPLETED_STEP on the flow's last step (catalog order)
    completed_flow_completes_last_step: bool = False
    #: action -> other action: an event mapped to the key is dropped when the same user and flow (and
    #: step, for two step actions) also has the other, e.g. SKIPPED_FLOW: COMPLETED_FLOW
    drop_if_also: Mapping[str, str] = field(default_factory=dict)
    #: state rows: the column with the user's current step; steps before it become COMPLETED_STEP and
    #: it becomes STARTED_STEP (COMPLETED_STEP when the row's action is in progress_current_done_when)
    progress_step: tuple[str, ...] = ()
    progress_current_done_when: tuple[str, ...] = ("COMPLETED_FLOW",)
    #: wide tables: rules that unpivot matching columns into events (then user/flow/... columns apply)
    wide: tuple[WideRule, ...] = ()

    def __post_init__(self) -> None:
        if self.timezone is not None:
            check_timezone(self.timezone)
        for fmt in (self.time_format, *self.extra_time_formats):
            if fmt not in TIME_FORMATS and "%" not in fmt:
                raise InputError(f"time format {fmt!r} is not one of {', '.join(TIME_FORMATS)} or a strftime pattern")
        if self.step_by not in STEP_BY:
            raise InputError(f"step_by {self.step_by!r} is not one of {', '.join(STEP_BY)}")
        if self.unmapped not in ("quarantine", "drop"):
            raise InputError(f"unmapped {self.unmapped!r} must be 'quarantine' or 'drop'")
        known = _ACTIONS | {DROP}
        maps = [self.action_map, *self.entity_action_map.values()]
        targets = {part for m in maps for v in m.values() for part in v.split("+")}
        bad = sorted(t for t in targets if t not in known)
        if bad:
            raise InputError(f"action_map maps to unknown actions: {', '.join(bad)}")
        named = (
            set(self.once_per_flow)
            | set(self.progress_current_done_when)
            | set(self.drop_if_also)
            | set(self.drop_if_also.values())
        )
        bad = sorted(a for a in named if a not in _ACTIONS)
        if bad:
            raise InputError(f"unknown actions: {', '.join(bad)}")
        bad = sorted(set(self.coalesce) - set(COALESCE_FIELDS))
        if bad:
            raise InputError(f"coalesce names unknown fields: {', '.join(bad)}")
        if self.event_pattern is not None:
            try:
                re.compile(self.event_pattern)
            except re.error as exc:
                raise InputError(f"event_pattern is not a regular expression: {exc}") from exc
        if self.default_time is not None:
            parse_instant(self.default_time, "default_time")
        parse_instant(self.earliest_time, "earliest_time")
        _duration(self.max_future, "max_future")

    @property
    def time_window(self) -> tuple[datetime, timedelta]:
        """(earliest time, how far ahead of now) a time may be."""
        return parse_instant(self.earliest_time, "earliest_time"), _duration(self.max_future, "max_future")

    @property
    def default_instant(self) -> datetime | None:
        return parse_instant(self.default_time, "default_time") if self.default_time else None

    @property
    def time_formats(self) -> tuple[str, ...]:
        return (self.time_format, *self.extra_time_formats)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: str, where: str) -> timedelta:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", value)
    if m is None:
        raise InputError(f"{where}: {value!r} is not a duration such as 90s, 30m, 6h or 1d")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


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
    "entity",
    "drop_events",
    "reject_users",
    "record_type",
    "record_types",
    "extra_time_formats",
    "coalesce",
    "once_per_flow",
    "progress_step",
    "progress_current_done_when",
}
_BOOL_FIELDS = {
    "flow_actions_ignore_step",
    "infer_previous_step_completed",
    "last_step_completes_flow",
    "completed_flow_completes_last_step",
    "trim_user_ids",
    "state_rows",
}


def _action_value(value: Any) -> str:
    """An action map value: one action, or several as a list or ``A+B``."""
    if isinstance(value, list | tuple):
        return "+".join(str(v).strip() for v in value)
    return "+".join(p.strip() for p in str(value).split("+"))


def _action_table(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise InputError(f"{where}: expected a mapping of event name to action")
    return {str(k): _action_value(v) for k, v in value.items()}


def _wide_rules(value: Any, where: str) -> tuple[WideRule, ...]:
    if not isinstance(value, list):
        raise InputError(f"{where}: 'wide' must be a list of rules")
    names = {f.name for f in fields(WideRule)}
    rules = []
    for i, entry in enumerate(value):
        if not isinstance(entry, Mapping) or not {"columns", "action"} <= set(entry):
            raise InputError(f"{where}: wide rule {i} needs 'columns' and 'action'")
        unknown = sorted(set(entry) - names)
        if unknown:
            raise InputError(f"{where}: wide rule {i} has unknown keys {', '.join(unknown)}")
        rules.append(WideRule(**{str(k): v for k, v in entry.items()}))
    return tuple(rules)


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
    try:
        for key, value in doc.items():
            if key in _TUPLE_FIELDS:
                changes[key] = (value,) if isinstance(value, str) else tuple(str(v) for v in value or ())
            elif key == "flow_map":
                changes[key] = {str(k): str(v) for k, v in (value or {}).items()}
            elif key == "action_map":
                changes[key] = _action_table(value or {}, f"{where} action_map")
            elif key == "entity_action_map":
                changes[key] = {
                    str(e): _action_table(m or {}, f"{where} entity_action_map {e}") for e, m in (value or {}).items()
                }
            elif key == "drop_if_also":
                changes[key] = {str(k): str(v) for k, v in (value or {}).items()}
            elif key == "step_map":
                changes[key] = {str(f): {str(k): str(v) for k, v in m.items()} for f, m in (value or {}).items()}
            elif key == "wide":
                changes[key] = _wide_rules(value or [], where)
            elif key in _BOOL_FIELDS:
                if not isinstance(value, bool):
                    raise InputError(f"{key} must be true or false")
                changes[key] = value
            else:
                changes[key] = None if value is None else str(value)
        return replace(base, **changes)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from exc
    except (TypeError, AttributeError) as exc:
        raise InputError(f"{where}: malformed value: {exc}") from exc


# ---------------------------------------------------------------- aggregate-only files

_AGGREGATE = re.compile(
    r"^(count|counts|users|user_count|unique_users|total|totals|sessions|views|impressions|starts|"
    r"completions|completes|dismissals|conversion|rate|percent|percentage|pct|n|.*_(count|rate|pct|total|"
    r"percent|users))$"
)


def refuse_aggregates(schema: pl.Schema, mapping: SourceMapping, source_file: str) -> None:
    """Dashboard exports hold counts per flow or step and no user: they cannot become per-user state."""
    if existing(schema, mapping.user):
        return
    counts = [c for c in schema.names() if _AGGREGATE.match(c.strip().lower())]
    if counts:
        raise InputError(
            "this looks like an aggregate export (count columns "
            f"{', '.join(repr(c) for c in counts[:6])} and no per-user id column; tried "
            f"{', '.join(repr(c) for c in mapping.user)}): totals per flow or step cannot become "
            "per-user state. Export per-user events or a per-user progress table instead",
            file=source_file,
            field=mapping.user[0] if mapping.user else "user",
        )


# ---------------------------------------------------------------- actions


def glob_regex(patterns: Sequence[str]) -> str | None:
    """One anchored regular expression for ``*`` / ``?`` glob patterns (None when there are none)."""
    if not patterns:
        return None
    parts = [re.escape(p).replace(r"\*", ".*").replace(r"\?", ".") for p in patterns]
    return "^(?:" + "|".join(parts) + ")$"


def glob_match(name: pl.Expr, patterns: Sequence[str]) -> pl.Expr | None:
    """Whether ``name`` matches any ``*`` / ``?`` glob (None when there are none). The usual shapes
    (``x``, ``x*``, ``*x``, ``*x*``) are literal tests, much cheaper than a regular expression on
    every row; other globs share one."""
    exact: list[str] = []
    tests: list[pl.Expr] = []
    rest: list[str] = []
    for p in patterns:
        core = p.strip("*")
        if "*" in core or "?" in core or not core:
            rest.append(p)
        elif p == core:
            exact.append(p)
        elif p.startswith("*") and p.endswith("*"):
            tests.append(name.str.contains(core, literal=True))
        elif p.startswith("*"):
            tests.append(name.str.ends_with(core))
        else:
            tests.append(name.str.starts_with(core))
    if exact:
        tests.append(name.is_in(exact))
    regex = glob_regex(rest)
    if regex is not None:
        tests.append(name.str.contains(regex))
    return pl.any_horizontal(tests).fill_null(False) if tests else None


def _lookup(name: pl.Expr, table: Mapping[str, str]) -> pl.Expr:
    if not table:
        return pl.lit(None, pl.String)
    return name.replace_strict(list(table), list(table.values()), default=None, return_dtype=pl.String)


def action_expr(
    raw: pl.Expr, mapping: SourceMapping, entity: pl.Expr | None = None, full: pl.Expr | None = None
) -> pl.Expr:
    """Event name -> Frigade action(s) (``A+B`` for several), DROP, or the raw name (unknown:
    quarantined later). ``raw`` is the name after prefixes (and after ``event_pattern``, in which case
    ``full`` is the whole name, which ``drop_events`` patterns also match). Explicit maps win over
    ``drop_events``; names in neither follow ``unmapped``."""
    name = raw
    for prefix in sorted(mapping.strip_prefixes, key=len, reverse=True):
        name = name.str.strip_prefix(prefix)
    mapped: pl.Expr = _lookup(name, {**{a: a for a in _ACTIONS}, **mapping.action_map})
    if entity is not None and mapping.entity_action_map:
        by_entity: pl.Expr = pl.lit(None, pl.String)
        for ent, table in mapping.entity_action_map.items():
            by_entity = pl.when(entity == ent).then(_lookup(name, table)).otherwise(by_entity)
        mapped = pl.coalesce(by_entity, mapped)
    hit = glob_match(name, mapping.drop_events)
    if hit is not None:
        if full is not None:
            hit = hit | glob_match(full, mapping.drop_events)  # type: ignore[operator]
        mapped = pl.coalesce(mapped, pl.when(hit).then(pl.lit(DROP)))
    fallback = pl.lit(DROP) if mapping.unmapped == "drop" else raw if full is None else pl.coalesce(raw, full)
    return (
        pl.when(raw.is_null() & (full.is_null() if full is not None else True))
        .then(None)
        .otherwise(pl.coalesce(mapped, fallback))
    )


# ---------------------------------------------------------------- the mapping itself


#: the command-line flag that names each field's column (``cli.app`` defines them)
COLUMN_FLAGS = {
    "user": "--user-col",
    "group": "--group-col",
    "flow": "--flow-col",
    "step": "--step-col",
    "action": "--action-col",
    "time": "--time-col",
    "data": "--data-col",
    "event_id": "--event-id-col",
}


def _missing(mapping: SourceMapping, key: str, schema: pl.Schema, source_file: str) -> InputError:
    cands: tuple[str, ...] = getattr(mapping, key)
    names = schema.names()
    close = difflib.get_close_matches(cands[0], names, n=1, cutoff=0.6) if cands else []
    column = close[0] if close else "COLUMN"
    flag = COLUMN_FLAGS.get(key)
    how = f"{flag} {column}, or " if flag else ""
    return InputError(
        f"missing column: none of {', '.join(repr(c) for c in cands)} is in the file "
        f"(columns: {', '.join(names[:30])})",
        file=source_file,
        field=cands[0] if cands else key,
        hint=f"name the column that holds the {key.replace('_', ' ')} with {how}`{key}: {column}` in a --mapping file",
    )


def check_timezone(name: str) -> None:
    """A zone polars and Python both know, or InputError naming the closest ones."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(name, sorted(zoneinfo.available_timezones()), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "use an IANA name like Europe/Paris"
        raise InputError(f"timezone {name!r} is not a known time zone", field="timezone", hint=hint) from None


def pattern_groups(mapping: SourceMapping) -> set[str]:
    """The named groups of the mapping's event pattern (fields it supplies from the event name)."""
    return set(re.compile(mapping.event_pattern).groupindex) if mapping.event_pattern else set()


def column_exprs(
    schema: pl.Schema, mapping: SourceMapping, source_file: str, keys: Sequence[str]
) -> dict[str, pl.Expr | None]:
    """Text expressions for column fields; raises InputError for a missing required one."""
    out: dict[str, pl.Expr | None] = {}
    supplied = pattern_groups(mapping) if mapping.action else set()
    for key in keys:
        cands: tuple[str, ...] = getattr(mapping, key)
        strip = key != "user" or mapping.trim_user_ids
        expr = text_of(schema, cands, coalesce=key in mapping.coalesce, strip=strip)
        constant = (
            (key == "flow" and mapping.flow_constant)
            or (key == "action" and mapping.action_constant)
            or key in supplied
        )
        if expr is None and key in mapping.required and not constant:
            raise _missing(mapping, key, schema, source_file)
        out[key] = expr
    return out


def _null() -> pl.Expr:
    return pl.lit(None, pl.String)


def flow_expr(raw: pl.Expr | None, mapping: SourceMapping) -> pl.Expr:
    flow = pl.lit(mapping.flow_constant) if mapping.flow_constant else raw if raw is not None else _null()
    if mapping.flow_map:
        flow = flow.replace(dict(mapping.flow_map))
    return flow


def step_columns(step: pl.Expr, flow: pl.Expr, mapping: SourceMapping) -> list[pl.Expr]:
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


def _row_events(lf: pl.LazyFrame, schema: pl.Schema, mapping: SourceMapping, source_file: str) -> pl.LazyFrame:
    """One event per row (before derivations), in the internal shape of ``transforms.derive``."""
    step_field = "progress_step" if mapping.progress_step else "step"
    cols = column_exprs(schema, mapping, source_file, ("user", "group", "flow", "action", "data", "event_id", "entity"))
    step_src = text_of(schema, getattr(mapping, step_field), coalesce="step" in mapping.coalesce)
    if step_src is None and "step" in mapping.required:
        raise _missing(mapping, step_field, schema, source_file)
    # Each source column's text is computed once, as a column: the expressions below read it many
    # times (polars does not share them inside when/then chains).
    staged = {k: e for k, e in (*cols.items(), ("step", step_src)) if e is not None}
    lf = lf.with_columns(e.alias(f"__text_{k}") for k, e in staged.items())
    cols = {k: (pl.col(f"__text_{k}") if k in staged else None) for k in cols}
    step_src = pl.col("__text_step") if step_src is not None else None
    if not existing(schema, mapping.time) and "time" in mapping.required and mapping.default_time is None:
        raise _missing(mapping, "time", schema, source_file)
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
        else _null()
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
    user = cols["user"] if cols["user"] is not None else _null()
    reject = glob_match(user, mapping.reject_users)
    if reject is not None:
        # the id itself stays in the row (user_id), not in the words: one reason for every such row
        anonymous = pl.lit("anonymous user id (reject_users: the source marks it as a visitor who never signed in)")
        reason = pl.when(reject).then(anonymous).otherwise(reason)
    return lf.with_row_index("__row", offset=1).select(
        pl.lit(source_file).alias("source_file"),
        pl.col("__row").cast(pl.Int64).alias("source_row"),
        user.alias("user_id"),
        (cols["group"] if cols["group"] is not None else _null()).alias("group_id"),
        flow.alias("flow_slug"),
        *step_columns(step_raw if step_raw is not None else _null(), flow, mapping),
        action.alias("action"),
        raw_event.alias("raw_event"),
        ts.alias("ts"),
        ts_raw.alias("ts_raw"),
        (cols["data"] if cols["data"] is not None else _null()).alias("data"),
        (cols["event_id"] if cols["event_id"] is not None else _null()).alias("event_id"),
        reason.alias("map_reason"),
    )


def map_events(
    lf: pl.LazyFrame, mapping: SourceMapping, source_file: str, *, steps: pl.LazyFrame | None = None
) -> pl.LazyFrame:
    """Map one export (lazily) into the canonical event frame. Raises InputError, naming the file
    and field, when a required column is missing, when the file holds only aggregates, or when a
    derivation needs the catalog's step order and ``steps`` (the catalog step table: flow_slug,
    step_id, step_index, step_count) is not given.

    One source row may become several events (they share source_file / source_row), or, in a wide
    table, none (a user with no progress)."""
    from transforms.derive import derive
    from transforms.wide import wide_events

    schema = lf.collect_schema()
    refuse_aggregates(schema, mapping, source_file)
    try:
        if mapping.wide:
            events = wide_events(lf, schema, mapping, source_file)
        else:
            events = _row_events(lf, schema, mapping, source_file)
        events = derive(events, mapping, steps)
    except InputError as exc:
        if exc.file is None:
            bare = str(exc).removeprefix(f"field {exc.field!r}: ") if exc.field else str(exc)
            raise InputError(bare, file=source_file, field=exc.field) from exc
        raise
    return conform(events)


__all__ += ["column_exprs", "flow_expr", "resolve_column", "step_columns", "text"]
