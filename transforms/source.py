"""Expressions over an export's own columns, as a mapping names them (pure polars).

Column references may be nested: ``properties.flow_id`` reads field ``flow_id`` of a struct column
``properties`` or of a JSON-text column of that name (``transforms.columns``). Here: the text of each
mapped field, with the error that names a missing required column; event names into Frigade actions
(prefixes, per-entity maps, ``*`` / ``?`` globs of non-state events); flow and step ids through the
mapping's maps; and the refusal of aggregate-only files. ``transforms.rows`` (one event per row) and
``transforms.wide`` (a column per flow or step) build their events from these.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence

import polars as pl

from frigade.rules import Action
from transforms.codes import lookup
from transforms.columns import existing, text_of
from transforms.schema import DROP, MAPPED_DROP, InputError
from transforms.spec import SourceMapping

__all__ = [
    "COLUMN_FLAGS",
    "action_expr",
    "column_exprs",
    "flow_expr",
    "flows_left_out",
    "glob_match",
    "glob_regex",
    "missing_column",
    "null_text",
    "pattern_groups",
    "refuse_aggregates",
    "step_columns",
]

_ACTIONS = frozenset(a.value for a in Action)

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
    """An event name through one of the mapping's action tables: an entry mapped to DROP is the
    mapping's own drop (``MAPPED_DROP``), counted apart from non-state events."""
    return lookup(name, {k: MAPPED_DROP if v == DROP else v for k, v in table.items()}, pl.String())


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


# ---------------------------------------------------------------- columns


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


def missing_column(mapping: SourceMapping, key: str, schema: pl.Schema, source_file: str) -> InputError:
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
            raise missing_column(mapping, key, schema, source_file)
        out[key] = expr
    return out


def null_text() -> pl.Expr:
    return pl.lit(None, pl.String)


def flow_expr(raw: pl.Expr | None, mapping: SourceMapping) -> pl.Expr:
    """The Frigade flow slug. A flow mapped to DROP keeps its source id (the message about its rows
    names it); ``transforms.derive`` marks its events as left out."""
    flow = pl.lit(mapping.flow_constant) if mapping.flow_constant else raw if raw is not None else null_text()
    table = {k: v for k, v in mapping.flow_map.items() if v != DROP}
    if table:
        flow = pl.coalesce(lookup(flow, table, pl.String()), flow)
    return flow


def flows_left_out(mapping: SourceMapping) -> list[str]:
    """The source flow ids the mapping drops (``flow_map: {id: DROP}``)."""
    return sorted(k for k, v in mapping.flow_map.items() if v == DROP)


def step_columns(step: pl.Expr, flow: pl.Expr, mapping: SourceMapping) -> list[pl.Expr]:
    """step_id keeps the source's text (mapped through a per-flow step map) so messages can name it;
    step_index is set when the source counts steps by position."""
    if mapping.step_map:
        mapped: pl.Expr = step
        for slug, table in mapping.step_map.items():
            mapped = (
                pl.when(flow == slug).then(pl.coalesce(lookup(step, dict(table), pl.String()), step)).otherwise(mapped)
            )
        step = mapped
    if mapping.step_by == "id":
        return [step.alias("step_id"), pl.lit(None, pl.Int64).alias("step_index")]
    offset = 1 if mapping.step_by == "index1" else 0
    index = step.cast(pl.Float64, strict=False).cast(pl.Int64, strict=False) - offset
    return [step.alias("step_id"), index.alias("step_index")]
