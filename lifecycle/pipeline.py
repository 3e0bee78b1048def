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
from frigade.rules import DEFAULT_RULES, Action, FlowState, Rules, initial_state
from lifecycle.exports import JSONL_SUFFIXES, check_exports, resolve_path, scan_jsonl
from transforms.codes import Codes
from transforms.mapping import SourceMapping, map_events
from transforms.plan import plan_history, plan_state
from transforms.schema import InputError
from transforms.state import FLOW_KEY, LOG_COLUMNS, Target, target_from_log
from transforms.sync import as_current, changed_user_flows, events_hash_seed, events_hashes
from transforms.validate import (
    DROPPED,
    P_MAP,
    ROW_SPAN,
    VALID,
    Limits,
    catalog_frames,
    encode,
    order_log,
    reason,
    row_key,
    whitespace_twins,
)

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


def scan_export(path: Path, mapping: SourceMapping | None = None) -> pl.LazyFrame:
    """A lazy scan of one export. CSV columns stay text: each mapping parses its own types; JSONL
    ``data`` fields are read as JSON text (``lifecycle.exports.jsonl_text_columns``)."""
    resolve_path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pl.scan_parquet(path)
        if suffix in JSONL_SUFFIXES:
            return scan_jsonl(path, mapping)
        sep = "\t" if suffix == ".tsv" else ","
        lf = pl.scan_csv(path, infer_schema=False, separator=sep)
        lf.collect_schema()
        return lf
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"unreadable: {exc}", file=str(path)) from exc


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


def load_events(
    paths: Sequence[Path], mapping: SourceMapping, steps: pl.LazyFrame, *, head: int | None = None
) -> pl.LazyFrame:
    """The canonical events of every export, each file named by its place in ``paths`` (``file_order``)
    rather than by its path on every row. ``head``: only each file's first rows (a pre-flight check)."""
    frames = []
    for i, p in enumerate(paths):
        try:
            scan = scan_export(p, mapping)
            events = map_events(scan if head is None else scan.head(head), mapping, str(p), steps=steps)
        except InputError as exc:
            if exc.file is None:
                raise InputError(str(exc), file=str(p), field=exc.field) from exc
            raise
        frames.append(events.drop("source_file").with_columns(pl.lit(i, pl.Int64).alias("file_order")))
    return pl.concat(frames, how="vertical")


def _fail_on_undeclared_zone(problems: pl.DataFrame, names: list[str]) -> None:
    naive = problems.filter(pl.col("map_reason").str.starts_with("time has no zone")).head(1)
    if naive.height:
        r = naive.row(0, named=True)
        what = f"time {r['ts_raw']!r}" if r["ts_raw"] is not None else "the time column"
        raise InputError(
            f"{what} has no zone and none is declared; set the source's timezone "
            "(--timezone or `timezone:` in the mapping) so nothing is guessed",
            file=names[r["file_order"]],
            row=r["source_row"],
            field="time",
        )


def _collect_exports(lf: pl.LazyFrame, paths: Sequence[Path], mapping: SourceMapping) -> pl.DataFrame:
    """Collect the events; when polars cannot read an export, the full check says which file, line
    and value (exit 2), else the polars error is the message."""
    try:
        # streaming: the export's own columns pass through in batches, only the result is held whole
        return lf.collect(engine="streaming")
    except pl.exceptions.PolarsError as exc:
        check_exports(paths, mapping, full=True)
        for p in paths:
            try:
                scan_export(p, mapping).collect(engine="streaming")
            except pl.exceptions.PolarsError as own:
                raise InputError(f"cannot be read: {own}", file=str(p)) from own
        raise InputError(f"the exports could not be read: {exc}") from exc


#: what the log needs of each valid event (``transforms.state.LOG_COLUMNS`` less ``uf``, plus event_id)
EVENT_COLUMNS = ["user_id", "group_id", "fl", "gs", "act", "ts", "data", "event_id", "row_key"]
#: what a message about an event that is not valid needs; null on valid events (and then free)
PROBLEM_COLUMNS = ["flow_slug", "step_id", "step_index", "action", "raw_event", "ts_raw", "map_reason"]


@dataclass
class Analysis:
    """The export read, validated, ordered and replayed: everything before choosing what to send.
    Held as columns, never as Python rows, and without a full copy of the export."""

    paths: list[Path]
    #: (row_key, problem) of every event, for the row accounting (``transforms.validate`` codes)
    rows: pl.DataFrame
    quarantine: pl.DataFrame
    target: Target
    event_counts: dict[str, int]
    quarantine_reasons: dict[str, int]
    dropped_events: dict[str, int]
    #: (user_id, print) of the users analysed, when asked for
    events_hashes: pl.DataFrame | None = None

    @property
    def targets(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        return self.target.state()


def _counts(frame: pl.DataFrame, by: str) -> dict[str, int]:
    table = frame.group_by(by).len().sort("len", by, descending=[True, False])
    return {str(k): int(v) for k, v in table.iter_rows()}


def analyze(
    paths: Sequence[Path],
    mapping: SourceMapping,
    catalog: Catalog,
    *,
    hash_events: bool = False,
    known: pl.DataFrame | None = None,
    head: int | None = None,
    rules: Rules = DEFAULT_RULES,
) -> Analysis:
    """``hash_events``: also hash each user's events (``transforms.sync.events_hashes``), for a state folder
    to remember. ``known``: the hashes a previous run remembered; users whose events hash the same
    are not replayed or planned again (their rows count as redundant). ``head``: analyse only each
    file's first rows, to find input errors early."""
    flows_lf, steps_lf = catalog_frames(catalog.step_table(), {f.slug: f.status for f in catalog.flows})
    codes = Codes.from_frames(flows_lf, steps_lf)
    names = [str(p) for p in paths]
    problem = pl.col("problem") != VALID
    # One pass over the exports: the integer codes of every event, the text the log needs, and the
    # text a message needs only on the events that are not valid (null, and so free, elsewhere).
    check_exports(paths, full=False)
    limits = Limits.window(*mapping.time_window)
    lazy_events = encode(load_events(paths, mapping, steps_lf, head=head), codes, limits).select(
        *EVENT_COLUMNS[:-1],
        row_key(pl.col("file_order"), pl.col("source_row")).alias("row_key"),
        "problem",
        *(pl.when(problem).then(pl.col(c)).alias(c) for c in PROBLEM_COLUMNS),
    )
    events = _collect_exports(lazy_events, paths, mapping)
    problems = (
        events.filter(problem)
        .select(
            "problem",
            "fl",
            (pl.col("row_key") // ROW_SPAN).alias("file_order"),
            (pl.col("row_key") % ROW_SPAN).alias("source_row"),
            *PROBLEM_COLUMNS,
            "ts",
            "user_id",
            "group_id",
            "data",
            "event_id",
        )
        .with_columns(
            # a typed time column keeps no text: its rows in quarantine show the time itself
            pl.coalesce("ts_raw", pl.col("ts").dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ")).alias("ts_raw")
        )
    )
    _fail_on_undeclared_zone(problems.filter(pl.col("problem") == P_MAP), names)
    worded = problems.with_columns(
        reason(codes, limits).alias("reason"),
        pl.col("file_order").replace_strict(range(len(names)), names, return_dtype=pl.String).alias("source_file"),
    )
    quarantine = worded.filter(pl.col("problem") > VALID).select(QUARANTINE_COLUMNS)
    dropped = _counts(worded.filter(pl.col("problem") == DROPPED), "raw_event")
    rows = events.select("row_key", "problem")
    valid = events.filter(~problem) if problems.height else events
    log = order_log(valid.select(EVENT_COLUMNS), len(codes.slugs), latest_row_only=mapping.state_rows)
    del events, valid
    duplicates = int(log.get_column("duplicate").sum())
    valid_events = log.height
    if duplicates:
        log = log.filter(~pl.col("duplicate"))
    hashed = events_hashes(log, events_hash_seed(codes, rules)) if hash_events or known is not None else None
    unchanged = 0
    if hashed is not None and known is not None and known.height:
        changed = hashed.join(known, on=["user_id", "events_hash"], how="anti")
        unchanged = hashed.height - changed.height
        if unchanged:
            hashed = changed
            # the (usually few) changed users are the smaller set to look events up in
            log = log.filter(pl.col("user_id").is_in(hashed.get_column("user_id").implode()))
    counts = {
        "user_ids_differing_by_whitespace": whitespace_twins(log.get_column("user_id")),
        "events": rows.height,
        "events_valid": valid_events,
        "events_duplicate": duplicates,
        "users_unchanged": unchanged,
    }
    target = target_from_log(log.select(LOG_COLUMNS), codes, rules)
    reasons = _counts(quarantine, "reason")
    return Analysis(list(paths), rows, quarantine, target, counts, reasons, dropped, hashed)


def plan(
    analysis: Analysis,
    *,
    mode: str = "state",
    baseline: tuple[pl.DataFrame, pl.DataFrame] | None = None,
    rules: Rules = DEFAULT_RULES,
) -> Prepared:
    """Requests from the baseline (remembered or read-back state; none for a backfill) to the target.
    With a baseline only user-flows whose target differs from it are planned."""
    target = analysis.target
    exp_flows, exp_steps = target.state()
    if mode == "history":
        if baseline is not None:
            raise InputError("history mode replays every event: use it for backfills, not syncs")
        planned = plan_history(target)
    elif baseline is None:
        planned = plan_state(target, rules=rules)
    else:
        # only the analysed users' remembered state can differ from their targets
        users = exp_flows.get_column("user_id").unique().implode()
        baseline = (
            baseline[0].filter(pl.col("user_id").is_in(users)),
            baseline[1].filter(pl.col("user_id").is_in(users)),
        )
        changed = changed_user_flows(exp_flows, exp_steps, *baseline)
        current = as_current(*(f.join(changed, on=FLOW_KEY, how="semi") for f in baseline))
        planned = plan_state(target.only(changed), current, rules)
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
    rules: Rules = DEFAULT_RULES,
) -> Prepared:
    return plan(analyze(paths, mapping, catalog, rules=rules), mode=mode, baseline=baseline, rules=rules)


def _account(paths: Sequence[Path], rows: pl.DataFrame, plan: pl.DataFrame) -> dict[str, int]:
    """Each source row lands in one bucket: sent (a request came from it), redundant (valid, but
    already implied or a duplicate), dropped (non-state) or quarantined. A row that became several
    events takes the first of those buckets that any of its events reached."""
    origins = plan.get_column("origin").drop_nulls().unique()
    problem = rows.get_column("problem")
    rows_in = count_rows(paths)
    keys = rows.get_column("row_key")
    # Events come in row order, unless a mapping made several of one row: then keys repeat.
    if keys.len() < 2 or bool((keys.diff().drop_nulls() > 0).all()) or keys.n_unique() == keys.len():
        # one event per row (the usual case): the buckets are counts, no grouping needed
        valid = int((problem == VALID).sum())
        per_bucket = {
            0: origins.len(),
            1: valid - origins.len(),
            2: int((problem > VALID).sum()),
            3: int((problem == DROPPED).sum()),
        }
        grouped = rows.height
    else:
        rank = (
            rows.with_columns(
                pl.when(pl.col("row_key").is_in(origins.implode()))
                .then(0)
                .when(pl.col("problem") == VALID)
                .then(1)
                .when(pl.col("problem") > VALID)
                .then(2)
                .otherwise(3)
                .alias("bucket")
            )
            .group_by("row_key")
            .agg(pl.col("bucket").min())
        )
        per_bucket = dict(rank.group_by("bucket").len().iter_rows())
        grouped = rank.height
    return {
        "rows_in": rows_in,
        "rows_sent": per_bucket.get(0, 0),
        "rows_redundant": per_bucket.get(1, 0),
        "rows_quarantined": per_bucket.get(2, 0),
        # Rows that produced no event at all (e.g. a wide row with no progress) count as dropped.
        "rows_dropped": per_bucket.get(3, 0) + rows_in - grouped,
        "requests_planned": plan.height,
        # the plan holds each user's requests together and each user-flow's from seq 0
        "users": int((plan.get_column("user_id") != plan.get_column("user_id").shift()).fill_null(True).sum()),
        "user_flows": int((plan.get_column("seq") == 0).sum()),
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
    # times as text, formatted by polars: a Python datetime cannot hold every time polars can
    as_text = pl.col("created_at").dt.to_string("%Y-%m-%dT%H:%M:%S%.3fZ")
    for offset in range(0, plan.height, chunk):
        for r in plan.slice(offset, chunk).with_columns(as_text).to_dicts():
            if r["user_id"] != current:
                if current is not None:
                    yield current, rows
                current, rows = r["user_id"], []
            rows.append(r)
    if current is not None:
        yield current, rows


def request_body_fields(r: dict[str, Any]) -> dict[str, Any]:
    """A plan row as PlannedRequest fields: data back to a JSON object, time to ISO-8601 UTC (text is
    kept as it is). Data that does not read as one JSON object (validation quarantines such rows) is
    passed on as text, so that the push records its request as unsendable rather than dropping it."""
    data: Any = None
    if r.get("data"):
        try:
            parsed = json.loads(r["data"])
        except (ValueError, RecursionError):
            parsed = None
        data = parsed if isinstance(parsed, dict) else r["data"]
    ts = r.get("created_at")
    if isinstance(ts, str):
        ts_text: str | None = ts
    else:
        ts_text = ts.isoformat(timespec="milliseconds").replace("+00:00", "Z") if ts is not None else None
    return {
        "request_id": r["request_id"],
        "user_id": r["user_id"],
        "group_id": r.get("group_id"),
        "flow_slug": r["flow_slug"],
        "seq": int(r["seq"]),
        "action": Action(r["action"]),
        "step_id": r.get("step_id"),
        "created_at": ts_text,
        "data": data,
    }


def start_states(catalog: Catalog, rules: Rules = DEFAULT_RULES) -> dict[str, FlowState]:
    return {f.slug: initial_state(f.step_ids, rules) for f in catalog.active}
