"""The job's stages as plain functions, tested without Prefect; the Prefect flows only sequence them.

prepare: exports -> canonical events -> classified (valid / dropped / quarantined) -> ordered,
de-duplicated -> target state -> plan, with the row accounting that must close.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from frigade.catalog import Catalog
from frigade.rules import Action, FlowState, initial_state
from transforms.mapping import SourceMapping, map_events
from transforms.plan import plan_history, plan_state
from transforms.schema import InputError
from transforms.state import FLOW_KEY, target_state
from transforms.sync import as_current, changed_user_flows
from transforms.validate import catalog_frames, classify, order_and_dedupe, row_key

QUARANTINE_COLUMNS = [
    "source_file",
    "source_row",
    "reason",
    "user_id",
    "group_id",
    "flow_slug",
    "step_id",
    "raw_event",
    "action",
    "ts_raw",
    "data",
    "event_id",
]


def scan_export(path: Path) -> pl.LazyFrame:
    """A lazy scan of one export. CSV columns stay text: each mapping parses its own types."""
    if not path.exists():
        raise InputError("file not found", file=str(path))
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pl.scan_parquet(path)
        if suffix in (".jsonl", ".ndjson", ".json"):
            return pl.scan_ndjson(path, infer_schema_length=10_000)
        if suffix in (".csv", ".tsv", ".txt"):
            sep = "\t" if suffix == ".tsv" else ","
            lf = pl.scan_csv(path, infer_schema=False, separator=sep)
            lf.collect_schema()
            return lf
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"unreadable: {exc}", file=str(path)) from exc
    raise InputError("unsupported file type (use .csv, .tsv, .parquet or .jsonl)", file=str(path))


def count_rows(paths: Sequence[Path]) -> int:
    return sum(int(scan_export(p).select(pl.len()).collect().item()) for p in paths)


@dataclass
class Prepared:
    """Everything up to the plan, materialised (polars frames, never Python rows)."""

    plan: pl.DataFrame
    quarantine: pl.DataFrame
    expected_flows: pl.DataFrame
    expected_steps: pl.DataFrame
    counts: dict[str, int] = field(default_factory=dict)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    dropped_events: dict[str, int] = field(default_factory=dict)


def load_events(paths: Sequence[Path], mapping: SourceMapping, steps: pl.LazyFrame) -> pl.LazyFrame:
    frames = []
    for p in paths:
        try:
            frames.append(map_events(scan_export(p), mapping, str(p), steps=steps))
        except InputError as exc:
            if exc.file is None:
                raise InputError(str(exc), file=str(p), field=exc.field) from exc
            raise
    return pl.concat(frames, how="vertical")


def _fail_on_undeclared_zone(classified: pl.DataFrame, names: list[str]) -> None:
    naive = classified.filter(pl.col("reason").str.starts_with("time has no zone")).head(1)
    if naive.height:
        r = naive.row(0, named=True)
        raise InputError(
            f"time {r['ts_raw']!r} has no zone and none is declared; set the source's timezone "
            "(--timezone or `timezone:` in the mapping) so nothing is guessed",
            file=names[r["file_order"]],
            row=r["source_row"],
            field="time",
        )


#: what planning needs of each valid event; diagnostics are kept only on rows that are not valid
EVENT_COLUMNS = ["user_id", "group_id", "flow_slug", "step_id", "step_index", "action", "ts", "data", "event_id"]


@dataclass
class Analysis:
    """The export read, validated, ordered and replayed: everything before choosing what to send.
    Held as columns, never as Python rows, and without a full copy of the export."""

    paths: list[Path]
    #: (row_key, status) of every event, for the row accounting
    rows: pl.DataFrame
    quarantine: pl.DataFrame
    #: valid events, de-duplicated and in order
    events: pl.DataFrame
    targets: tuple[pl.DataFrame, pl.DataFrame]
    event_counts: dict[str, int]
    quarantine_reasons: dict[str, int]
    dropped_events: dict[str, int]


def _counts(frame: pl.DataFrame, by: str) -> dict[str, int]:
    table = frame.group_by(by).len().sort("len", by, descending=[True, False])
    return {str(k): int(v) for k, v in table.iter_rows()}


def analyze(paths: Sequence[Path], mapping: SourceMapping, catalog: Catalog) -> Analysis:
    flows_lf, steps_lf = catalog_frames(catalog.step_table(), {f.slug: f.status for f in catalog.flows})
    names = [str(p) for p in paths]
    file_order = pl.col("source_file").replace_strict(names, list(range(len(names))), return_dtype=pl.Int64)
    problem = pl.col("status") != "valid"
    classified = (
        classify(load_events(paths, mapping, steps_lf), flows_lf, steps_lf)
        .select(
            *EVENT_COLUMNS,
            "status",
            file_order.alias("file_order"),
            "source_row",
            row_key(file_order, pl.col("source_row")).alias("row_key"),
            *(pl.when(problem).then(pl.col(c)).alias(c) for c in ("reason", "raw_event", "ts_raw")),
        )
        .collect()
    )
    _fail_on_undeclared_zone(classified, names)
    quarantine = (
        classified.filter(pl.col("status") == "quarantined")
        .with_columns(pl.col("file_order").replace_strict(list(range(len(names))), names).alias("source_file"))
        .select(QUARANTINE_COLUMNS)
    )
    dropped = _counts(classified.filter(pl.col("status") == "dropped"), "raw_event")
    ordered = order_and_dedupe(classified.lazy().filter(pl.col("status") == "valid"))
    events_lf = ordered.filter(~pl.col("duplicate")).select(*EVENT_COLUMNS, "row_key")
    duplicates_lf = ordered.select(pl.col("duplicate").sum())
    events, duplicates = pl.collect_all([events_lf, duplicates_lf])
    counts = {
        "events": classified.height,
        "events_valid": events.height + int(duplicates.item()),
        "events_duplicate": int(duplicates.item()),
    }
    rows = classified.select("row_key", "status")
    reasons = _counts(quarantine, "reason")
    del classified  # the export's full width is not kept past this point
    exp_flows, exp_steps = pl.collect_all(list(target_state(events.lazy(), steps_lf)))
    return Analysis(list(paths), rows, quarantine, events, (exp_flows, exp_steps), counts, reasons, dropped)


def plan(
    analysis: Analysis, *, mode: str = "state", baseline: tuple[pl.DataFrame, pl.DataFrame] | None = None
) -> Prepared:
    """Requests from the baseline (remembered or read-back state; none for a backfill) to the target.
    With a baseline only user-flows whose target differs from it are planned."""
    exp_flows, exp_steps = analysis.targets
    if mode == "history":
        if baseline is not None:
            raise InputError("history mode replays every event: use it for backfills, not syncs")
        planned = plan_history(analysis.events.lazy()).collect()
    elif baseline is None:
        planned = plan_state(exp_flows, exp_steps).collect()
    else:
        changed = changed_user_flows(exp_flows, exp_steps, *baseline)
        flows, steps = (f.join(changed, on=FLOW_KEY, how="semi") for f in (exp_flows, exp_steps))
        current = as_current(*(f.join(changed, on=FLOW_KEY, how="semi") for f in baseline))
        planned = plan_state(flows, steps, current).collect()
    planned = planned.with_columns(pl.format("{}|{}|{}", "user_id", "flow_slug", "seq").alias("request_id"))
    counts = _account(analysis.paths, analysis.rows, planned) | analysis.event_counts
    return Prepared(
        planned, analysis.quarantine, exp_flows, exp_steps, counts, analysis.quarantine_reasons, analysis.dropped_events
    )


def prepare(
    paths: Sequence[Path],
    mapping: SourceMapping,
    catalog: Catalog,
    *,
    mode: str = "state",
    baseline: tuple[pl.DataFrame, pl.DataFrame] | None = None,
) -> Prepared:
    return plan(analyze(paths, mapping, catalog), mode=mode, baseline=baseline)


def _account(paths: Sequence[Path], rows: pl.DataFrame, plan: pl.DataFrame) -> dict[str, int]:
    """Each source row lands in one bucket: sent (a request came from it), redundant (valid, but
    already implied or a duplicate), dropped (non-state) or quarantined. A row that became several
    events takes the first of those buckets that any of its events reached."""
    origins = plan.select(pl.col("origin").alias("row_key")).unique().with_columns(pl.lit(True).alias("sent"))
    rank = (
        rows.join(origins, on="row_key", how="left")
        .with_columns(
            pl.when(pl.col("sent").fill_null(False))
            .then(0)
            .when(pl.col("status") == "valid")
            .then(1)
            .when(pl.col("status") == "quarantined")
            .then(2)
            .otherwise(3)
            .alias("bucket")
        )
        .group_by("row_key")
        .agg(pl.col("bucket").min())
    )
    per_bucket = dict(rank.group_by("bucket").len().iter_rows())
    rows_in = count_rows(paths)
    return {
        "rows_in": rows_in,
        "rows_sent": per_bucket.get(0, 0),
        "rows_redundant": per_bucket.get(1, 0),
        "rows_quarantined": per_bucket.get(2, 0),
        # Rows that produced no event at all (e.g. a wide row with no progress) count as dropped.
        "rows_dropped": per_bucket.get(3, 0) + rows_in - rank.height,
        "requests_planned": plan.height,
        "users": plan["user_id"].n_unique(),
        "user_flows": plan.select("user_id", "flow_slug").n_unique(),
    }


def accounting_closes(counts: dict[str, int]) -> bool:
    return counts["rows_in"] == (
        counts["rows_sent"] + counts["rows_redundant"] + counts["rows_dropped"] + counts["rows_quarantined"]
    )


# ---------------------------------------------------------------- plan -> push work


def iter_user_requests(plan: pl.DataFrame, chunk: int = 20_000) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(user, that user's requests in send order), users in plan order. Plan must be sorted by user."""
    current: str | None = None
    rows: list[dict[str, Any]] = []
    for offset in range(0, plan.height, chunk):
        for r in plan.slice(offset, chunk).to_dicts():
            if r["user_id"] != current:
                if current is not None:
                    yield current, rows
                current, rows = r["user_id"], []
            rows.append(r)
    if current is not None:
        yield current, rows


def request_body_fields(r: dict[str, Any]) -> dict[str, Any]:
    """A plan row as PlannedRequest fields: data back to a JSON object, time to ISO-8601 UTC."""
    data = None
    if r.get("data"):
        try:
            parsed = json.loads(r["data"])
        except json.JSONDecodeError:
            parsed = None
        data = parsed if isinstance(parsed, dict) else None
    ts = r.get("created_at")
    return {
        "request_id": r["request_id"],
        "user_id": r["user_id"],
        "group_id": r.get("group_id"),
        "flow_slug": r["flow_slug"],
        "seq": int(r["seq"]),
        "action": Action(r["action"]),
        "step_id": r.get("step_id"),
        "created_at": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z") if ts is not None else None,
        "data": data,
    }


def start_states(catalog: Catalog) -> dict[str, FlowState]:
    return {f.slug: initial_state(f.step_ids) for f in catalog.active}
