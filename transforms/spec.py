"""The mapping spec: plain data that says how an export's columns become canonical events.

A mapping is a YAML file, a built-in preset or command-line flags, never code per tool; this module
holds its fields (``SourceMapping``, ``WideRule``), their checks, and ``mapping_from_dict``, which
builds one from YAML-shaped data. It builds no expressions: ``transforms.source`` reads the export's
columns, ``transforms.rows`` / ``transforms.wide`` and ``transforms.derive`` make the events.

Every field is documented in ``transforms/presets/README.md``.
"""

from __future__ import annotations

import difflib
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any

from frigade.rules import Action
from transforms.columns import TIME_FORMATS, parse_instant
from transforms.schema import DROP, InputError

__all__ = [
    "COALESCE_FIELDS",
    "STATE_TABLE_KEYS",
    "STEP_BY",
    "WIDE_VALUES",
    "SourceMapping",
    "WideRule",
    "check_timezone",
    "mapping_from_dict",
]

STEP_BY = ("id", "index0", "index1")
#: a state table's statuses (each a column of times or flags) and the row's own time for flags
STATE_TABLE_KEYS = ("started", "completed", "dismissed", "time")
WIDE_VALUES = ("flag", "time", "list")
_ACTIONS = frozenset(a.value for a in Action)
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


#: fields of ``SourceMapping`` that the mapping itself records, which no document sets
NOT_IN_DOCUMENTS = frozenset({"step_map_from"})


@dataclass(frozen=True, slots=True)
class SourceMapping:
    """How one export shape maps onto canonical events. Each column field lists candidate names:
    the first that exists in the file is used (``properties.x`` paths allowed), or, for fields named
    in ``coalesce``, the first non-empty one on each row."""

    name: str = "long"
    description: str = ""
    #: where a JSON document keeps its records: a dotted path to a list (``results``, ``data.items``);
    #: without it, the document's one list of objects
    records: str | None = None
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
    #: COMPLETED_STEP on the flow's last step (catalog order) also means COMPLETED_FLOW (Pendo); true for
    #: every flow, or a list of Frigade flow slugs (a tour beside a checklist)
    last_step_completes_flow: bool | tuple[str, ...] = False
    #: COMPLETED_STEP on every step of the flow, in any order, also means COMPLETED_FLOW (a checklist),
    #: at the time of the last of them; true for every flow, or a list of Frigade flow slugs
    all_steps_complete_flow: bool | tuple[str, ...] = False
    #: COMPLETED_FLOW also means COMPLETED_STEP on the flow's last step (catalog order)
    completed_flow_completes_last_step: bool = False
    #: a dismissal (SKIPPED_FLOW) followed, at a later time, by a start or completion of the same user and
    #: flow (a guide shown again) is superseded: the latest status wins. False: a dismissal stands
    latest_status_wins: bool = True
    #: action -> other action: an event mapped to the key is dropped when the same user and flow (and
    #: step, for two step actions) also has the other, e.g. SKIPPED_FLOW: COMPLETED_FLOW
    drop_if_also: Mapping[str, str] = field(default_factory=dict)
    #: state rows: the column with the user's current step; steps before it become COMPLETED_STEP and
    #: it becomes STARTED_STEP (COMPLETED_STEP when the row's action is in progress_current_done_when)
    progress_step: tuple[str, ...] = ()
    progress_current_done_when: tuple[str, ...] = ("COMPLETED_FLOW",)
    #: wide tables: rules that unpivot matching columns into events (then user/flow/... columns apply)
    wide: tuple[WideRule, ...] = ()
    #: state tables (one row per user and item, ``transforms.state_table``): ``started``, ``completed``,
    #: ``dismissed`` name the columns (times or flags) of each status, ``time`` the row's time for flags
    state_table: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: where ``step_map`` was read from (a mapping file), for the message when it names a flow or
    #: step the catalog lacks; set by ``mapping_from_dict``, never by a document
    step_map_from: str | None = None

    def __post_init__(self) -> None:
        if self.timezone is not None:
            check_timezone(self.timezone)
        for fmt in (self.time_format, *self.extra_time_formats):
            if fmt not in TIME_FORMATS and "%" not in fmt:
                raise InputError(f"time format {fmt!r} is not one of {', '.join(TIME_FORMATS)} or a strftime pattern")
        bad = sorted(set(self.state_table) - set(STATE_TABLE_KEYS))
        if bad:
            raise InputError(f"state_table has unknown keys {', '.join(bad)}; known: {', '.join(STATE_TABLE_KEYS)}")
        if self.state_table and self.wide:
            raise InputError("a mapping is a state table or a wide table, not both (state_table and wide)")
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
#: true (every flow), false, or a list of Frigade flow slugs
_FLOWS_FIELDS = {"last_step_completes_flow", "all_steps_complete_flow"}
_BOOL_FIELDS = {
    "flow_actions_ignore_step",
    "infer_previous_step_completed",
    "completed_flow_completes_last_step",
    "latest_status_wins",
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
    names = {f.name for f in fields(SourceMapping)} - NOT_IN_DOCUMENTS
    unknown = sorted(set(map(str, doc)) - names)
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, sorted(names), n=1, cutoff=0.6)
        meant = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(names))}"
        others = f" (and {', '.join(repr(k) for k in unknown[1:])})" if len(unknown) > 1 else ""
        raise InputError(f"{where}: unknown key {key!r}{others}; {meant}")
    changes: dict[str, Any] = {}
    try:
        for key, value in doc.items():
            if key in _TUPLE_FIELDS:
                changes[key] = (value,) if isinstance(value, str) else tuple(str(v) for v in value or ())
            elif key == "flow_map":
                changes[key] = {str(k): str(v) for k, v in (value or {}).items()}
            elif key == "action_map":
                # a mapping extends the preset's event names: its entries add to them or override them
                changes[key] = {**base.action_map, **_action_table(value or {}, f"{where} action_map")}
            elif key == "entity_action_map":
                tables = dict(base.entity_action_map)
                for e, m in (value or {}).items():
                    tables[str(e)] = {
                        **tables.get(str(e), {}),
                        **_action_table(m or {}, f"{where} entity_action_map {e}"),
                    }
                changes[key] = tables
            elif key == "drop_if_also":
                changes[key] = {str(k): str(v) for k, v in (value or {}).items()}
            elif key == "step_map":
                changes[key] = {str(f): {str(k): str(v) for k, v in m.items()} for f, m in (value or {}).items()}
                changes["step_map_from"] = where
            elif key == "wide":
                changes[key] = _wide_rules(value or [], where)
            elif key == "state_table":
                if not isinstance(value, Mapping):
                    raise InputError(
                        "state_table must be a mapping such as {completed: completed_at, dismissed: dismissed}"
                    )
                changes[key] = {
                    str(k): (v,) if isinstance(v, str) else tuple(str(c) for c in v or ()) for k, v in value.items()
                }
            elif key in _FLOWS_FIELDS:
                if isinstance(value, bool):
                    changes[key] = value
                elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                    changes[key] = tuple(value)
                else:
                    raise InputError(f"{key} must be true, false or a list of flow slugs")
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


def check_timezone(name: str) -> None:
    """A zone polars and Python both know, or InputError naming the closest ones."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(name, sorted(zoneinfo.available_timezones()), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "use an IANA name like Europe/Paris"
        raise InputError(f"timezone {name!r} is not a known time zone", field="timezone", hint=hint) from None
