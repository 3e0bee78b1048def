"""What a person needs to fix quarantined rows: where to look (file:row examples of each reason) and,
when the export names flows or steps the catalog does not have, which ids those are beside the
catalog's own, with the mapping key that translates them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

#: ids listed per hint; the rest are counted
SHOWN_IDS = 8
UNKNOWN_FLOW = "unknown flow '"
UNKNOWN_STEP = "unknown step '"


def examples(quarantine: pl.DataFrame, per_reason: int = 3, reasons: int = 20) -> dict[str, list[str]]:
    """``file:row`` of the first rows of each of the most frequent reasons, in file and row order."""
    if quarantine.is_empty():
        return {}
    top = quarantine.group_by("reason").len().sort("len", "reason", descending=[True, False]).head(reasons)
    firsts = (
        quarantine.join(top.select("reason"), on="reason", how="semi")
        # one source row can make several events: name each row once
        .unique(["reason", "source_file", "source_row"])
        .sort("source_file", "source_row")
        .group_by("reason", maintain_order=True)
        .head(per_reason)
        .select("reason", pl.format("{}:{}", "source_file", "source_row").alias("where"))
    )
    by_reason: dict[str, list[str]] = {str(r): [] for r in top.get_column("reason")}
    for reason, where in firsts.iter_rows():
        by_reason[reason].append(where)
    return by_reason


def _listed(counts: pl.DataFrame, column: str) -> str:
    shown = ", ".join(
        f"'{v}' ({counted(n, 'row')})" for v, n in counts.head(SHOWN_IDS).select(column, "len").iter_rows()
    )
    more = counts.height - SHOWN_IDS
    return shown + (f" and {more} more" if more > 0 else "")


def _some(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:SHOWN_IDS])
    return shown + (f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else "")


def catalog_hints(rows: pl.DataFrame, catalog_steps: Mapping[str, Sequence[str]]) -> list[str]:
    """One line per thing the catalog does not know, from rows with ``reason``, ``flow_slug`` and
    ``step_id`` (quarantine, or inspect's classified sample): the unmatched ids next to the catalog's,
    and the ``flow_map`` / ``step_map`` entry that would translate them."""
    if rows.is_empty():
        return []
    hints = []
    # rows, not events: one source row can make several events
    per_row = ["source_file", "source_row"] if {"source_file", "source_row"} <= set(rows.columns) else []
    if per_row:
        rows = rows.unique(["reason", "flow_slug", "step_id", *per_row])
    flows = (
        rows.filter(pl.col("reason").str.starts_with(UNKNOWN_FLOW))
        .group_by("flow_slug")
        .len()
        .sort("len", "flow_slug", descending=[True, False])
    )
    if flows.height:
        first = flows.item(0, "flow_slug")
        hints.append(
            f"{counted(int(flows['len'].sum()), 'row')} {_name(int(flows['len'].sum()))} "
            f"{counted(flows.height, 'flow')} the catalog does not have: "
            f"{_listed(flows, 'flow_slug')}; the catalog's flows are {_some(sorted(catalog_steps))}. "
            f"If they are the same flows under the old tool's ids, map them in a --mapping file: "
            f"flow_map: {{{first}: <catalog flow slug>, ...}}"
        )
    steps = (
        rows.filter(pl.col("reason").str.starts_with(UNKNOWN_STEP))
        .group_by("flow_slug", "step_id")
        .len()
        .sort("flow_slug", "len", "step_id", descending=[False, True, False])
    )
    for (flow,), part in steps.group_by("flow_slug", maintain_order=True):
        known = list(catalog_steps.get(str(flow), ()))
        hints.append(
            f"flow '{flow}': {counted(int(part['len'].sum()), 'row')} {_name(int(part['len'].sum()))} "
            f"{'a step' if part.height == 1 else 'steps'} it does not have: "
            f"{_listed(part, 'step_id')}; its steps are {_some(known)}. Map them in a --mapping file: "
            f"step_map: {{{flow}: {{{part.item(0, 'step_id')}: <step id>, ...}}}}"
        )
    return hints


def counted(n: int, noun: str) -> str:
    """``n`` and the noun, plural unless ``n`` is 1: '1 row', '2 rows'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _name(rows: int) -> str:
    return "names" if rows == 1 else "name"


def _time_hint(raw: str | None) -> str:
    """For an unparseable time that is all digits, the epoch unit its length suggests."""
    digits = (raw or "").strip().lstrip("-")
    units = {10: ("seconds", "epoch_s"), 13: ("milliseconds", "epoch_ms"), 16: ("microseconds", "epoch_us")}
    unit = units.get(len(digits)) if digits.isdigit() else None
    return f"; if the times are {unit[0]} since 1970, pass --time-format {unit[1]}" if unit else ""


#: a share of rows quarantined above which the mapping, not the rows, is the likely problem
MOSTLY_QUARANTINED = 0.5


def mostly_quarantined(counts: Mapping[str, int], reasons: Mapping[str, int]) -> str | None:
    """A warning when most rows were quarantined (a wrong preset, a mapping naming the wrong flows):
    the run is still correct for the rest, but the export was probably not read as it is meant."""
    rows, quarantined = counts.get("rows_in", 0), counts.get("rows_quarantined", 0)
    if not rows or quarantined / rows <= MOSTLY_QUARANTINED:
        return None
    top = max(reasons.items(), key=lambda kv: kv[1], default=None)
    most = f", most as {top[0]!r} ({top[1]} rows)" if top else ""
    return (
        f"{quarantined} of {rows} rows ({quarantined / rows:.0%}) were quarantined{most}: is the preset or "
        "mapping the right one? `frigade-migrate inspect EXPORT` proposes a preset and shows the events"
    )


def nothing_to_migrate(counts: Mapping[str, int], quarantine: pl.DataFrame) -> str | None:
    """Why a run must not go on, when no row of the export can be migrated and rows were quarantined
    (a wrong column, unit or catalog, not a finished migration): the top reasons with a first row each."""
    rows_in, quarantined = counts.get("rows_in", 0), counts.get("rows_quarantined", 0)
    if not rows_in or not quarantined or counts.get("rows_sent", 0) or counts.get("rows_redundant", 0):
        return None
    top = quarantine.group_by("reason").len().sort("len", "reason", descending=[True, False]).head(3)
    parts = []
    for reason, n in top.iter_rows():
        first = quarantine.filter(pl.col("reason") == reason).sort("source_file", "source_row").row(0, named=True)
        raw = first.get("ts_raw")
        shown = f", time {raw!r}" if reason == "unparseable time" and raw is not None else ""
        parts.append(f"{reason}: {n} (first at {first['source_file']}:{first['source_row']}{shown})")
    hint = _time_hint((top.item(0, "reason") == "unparseable time" and first_raw(quarantine)) or None)
    return f"none of the {rows_in} rows can be migrated, {quarantined} were quarantined: " + "; ".join(parts) + hint


def first_raw(quarantine: pl.DataFrame) -> str | None:
    rows = quarantine.filter(pl.col("reason") == "unparseable time").sort("source_file", "source_row")
    return None if rows.is_empty() else rows.item(0, "ts_raw")
