"""The export's analysis and what it plans, as pure functions over frames (no file is opened here:
``lifecycle.exports`` scans the files into ``Source``s).

sources -> canonical events -> classified (valid / dropped / quarantined) -> ordered, de-duplicated ->
target state (``analyze``) -> the fewest requests from a baseline to it (``plan_requests``), with the
row accounting that must close (``transforms.accounting``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import polars as pl

from frigade.catalog import Catalog
from frigade.rules import DEFAULT_RULES, Rules
from transforms.accounting import account, coverage, not_migrated, quarantine_kind
from transforms.codes import Codes
from transforms.mapping import map_events
from transforms.merge import Policy, merge_summary, merge_target
from transforms.plan import plan_history, plan_state
from transforms.schema import FLOW_DROP, MAPPED_DROP, InputError
from transforms.spec import SourceMapping
from transforms.state import FLOW_KEY, LOG_COLUMNS, Target, target_from_log
from transforms.sync import (
    REMEMBERED_FLOW_SCHEMA,
    REMEMBERED_STEP_SCHEMA,
    StateFrames,
    as_current,
    changed_user_flows,
    events_hash_seed,
    events_hashes,
)
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
    # not_migrated (a user's progress lost) or not_a_user (transforms.accounting)
    "kind",
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


@dataclass(frozen=True)
class Source:
    """One export: the name messages give it (its path) and a lazy scan of its rows."""

    name: str
    scan: pl.LazyFrame


class UnreadableSourceError(InputError):
    """Polars could not read the rows of a source: the caller, who has the files, can say where."""

    def __init__(self, error: pl.exceptions.PolarsError) -> None:
        super().__init__(f"the exports could not be read: {error}")
        self.error = error


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
    #: planned from the state Frigade holds (``transforms.merge``): what the policy did, and the
    #: (user_id, flow_slug) both sides changed differently
    existing: dict[str, int] | None = None
    conflicts: pl.DataFrame | None = None


def load_events(
    sources: Sequence[Source], mapping: SourceMapping, steps: pl.LazyFrame, *, head: int | None = None
) -> pl.LazyFrame:
    """The canonical events of every source, each named by its place in ``sources`` (``file_order``)
    rather than by its name on every row. ``head``: only each source's first rows (a pre-flight check)."""
    frames = []
    for i, source in enumerate(sources):
        scan = source.scan if head is None else source.scan.head(head)
        try:
            events = map_events(scan, mapping, source.name, steps=steps)
        except InputError as exc:
            if exc.file is None:
                raise InputError(str(exc), file=source.name, field=exc.field) from exc
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


#: what the log needs of each valid event (``transforms.state.LOG_COLUMNS`` less ``uf``, plus event_id)
EVENT_COLUMNS = ["user_id", "group_id", "fl", "gs", "act", "ts", "data", "event_id", "row_key"]
#: what a message about an event that is not valid needs; null on valid events (and then free)
PROBLEM_COLUMNS = ["flow_slug", "step_id", "step_index", "action", "raw_event", "ts_raw", "map_reason"]


@dataclass
class Analysis:
    """The export read, validated, ordered and replayed: everything before choosing what to send.
    Held as columns, never as Python rows, and without a full copy of the export."""

    #: the sources' names, in ``file_order``
    names: list[str]
    #: rows in the sources, all of them (also those no event came from)
    rows_in: int
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
    def targets(self) -> StateFrames:
        return StateFrames(*self.target.state())


def _counts(frame: pl.DataFrame, by: str) -> dict[str, int]:
    table = frame.group_by(by).len().sort("len", by, descending=[True, False])
    return {str(k): int(v) for k, v in table.iter_rows()}


def dropped_by_mapping(rows: pl.DataFrame, worded: pl.DataFrame) -> dict[str, int]:
    """Of the rows the accounting counts dropped (every event of the row dropped), those the mapping
    dropped itself: ``rows_dropped_by_mapping`` (an ``action_map`` or ``flow_map`` entry mapped to
    DROP, no non-state event beside) and, of them, ``rows_flow_left_out`` (every event of a flow the
    user chose to leave out, ``flow_map: {id: DROP}``): not progress lost, since the user asked for it.
    ``rows``: row_key and problem of every event; ``worded``: the events that are not valid, with
    file_order, source_row and action."""
    marks = [MAPPED_DROP, FLOW_DROP]
    drops = worded.filter(pl.col("problem") == DROPPED)
    if drops.is_empty() or not drops.select(pl.col("action").is_in(marks).any()).item():
        return {"rows_dropped_by_mapping": 0, "rows_flow_left_out": 0}
    per_row = drops.group_by(row_key(pl.col("file_order"), pl.col("source_row")).alias("row_key")).agg(
        pl.col("action").is_in(marks).all().alias("by_mapping"), (pl.col("action") == FLOW_DROP).all().alias("left_out")
    )
    # a row with an event that is not dropped counts elsewhere
    elsewhere = rows.filter(pl.col("problem") != DROPPED).select("row_key")
    mine = per_row.join(elsewhere, on="row_key", how="anti")
    return {
        "rows_dropped_by_mapping": int(mine.get_column("by_mapping").sum()),
        "rows_flow_left_out": int(mine.get_column("left_out").sum()),
    }


@dataclass(frozen=True)
class Encoded:
    """The export's events as integer codes (``EVENT_COLUMNS``, ``row_key``, ``problem`` and the text
    a message needs on the events that are not valid), still lazy: what a shard is cut from.

    A shard keeps its valid events (``events``, without the message text) apart from the others
    (``invalid``, with it): read back from Parquet, a text column costs its full length even when it
    is null on every valid row."""

    events: pl.LazyFrame
    codes: Codes
    limits: Limits
    names: list[str]
    invalid: pl.LazyFrame | None = None


def check_step_map(mapping: SourceMapping, catalog: Catalog) -> None:
    """Refuse a ``step_map`` entry that can never apply, which would otherwise be ignored without a
    word: a flow the catalog lacks (step_map is keyed by the Frigade slug, after flow_map), or, with
    steps named by id, a step its flow lacks."""
    steps = {f.slug: f.step_ids for f in catalog.flows}
    where = mapping.step_map_from
    for slug, table in mapping.step_map.items():
        if slug not in steps:
            raise InputError(
                f"step_map names flow {slug!r}, which the catalog does not have{_meant(slug, steps)}; "
                "step_map is keyed by Frigade flow slugs (after flow_map): fix or remove the entry",
                file=where,
                field="step_map",
            )
        if mapping.step_by != "id":
            continue
        for raw, step in table.items():
            if step not in steps[slug]:
                raise InputError(
                    f"step_map maps {raw!r} to step {step!r}, which flow {slug!r} does not have"
                    f"{_meant(step, steps[slug])}; its steps: {', '.join(steps[slug])}",
                    file=where,
                    field="step_map",
                )


def _meant(name: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def encode_sources(
    sources: Sequence[Source], mapping: SourceMapping, catalog: Catalog, *, head: int | None = None
) -> Encoded:
    """One lazy pass over the exports: the integer codes of every event, the text the log needs, and
    the text a message needs only on the events that are not valid (null, and so free, elsewhere)."""
    coded, codes, limits = _encode(sources, mapping, catalog, head)
    problem = pl.col("problem") != VALID
    events = coded.select(
        *EVENT_COLUMNS[:-1],
        "row_key",
        "problem",
        *(pl.when(problem).then(pl.col(c)).alias(c) for c in PROBLEM_COLUMNS),
    )
    return Encoded(events, codes, limits, [s.name for s in sources])


def _encode(
    sources: Sequence[Source], mapping: SourceMapping, catalog: Catalog, head: int | None
) -> tuple[pl.LazyFrame, Codes, Limits]:
    """Every event of the exports with its codes, ``row_key`` and ``problem``, lazily."""
    check_step_map(mapping, catalog)
    flows_lf, steps_lf = catalog_frames(catalog.step_table(), {f.slug: f.status for f in catalog.flows})
    codes = Codes.from_frames(flows_lf, steps_lf)
    limits = Limits.window(*mapping.time_window)
    events = encode(load_events(sources, mapping, steps_lf, head=head), codes, limits)
    return events.with_columns(row_key(pl.col("file_order"), pl.col("source_row")).alias("row_key")), codes, limits


def export_coverage(
    sources: Sequence[Source], mapping: SourceMapping, catalog: Catalog, *, head: int | None = None
) -> pl.DataFrame:
    """The coverage table of the exports (``transforms.accounting.coverage``): one more pass over them,
    for the dry run and ``inspect``, which hold only its groups."""
    events, codes, limits = _encode(sources, mapping, catalog, head)
    worded = events.with_columns(pl.when(pl.col("problem") != VALID).then(reason(codes, limits)).alias("reason"))
    try:
        return coverage(worded).collect(engine="streaming")
    except pl.exceptions.PolarsError as exc:
        raise UnreadableSourceError(exc) from exc


#: the hash's seed: a run's shards are fixed when it splits (the split is kept for a resume)
SHARD_SEED = 0x5EED


def shard_of(user: pl.Expr, shards: int) -> pl.Expr:
    """The shard of each user: a hash of the id without surrounding whitespace, so ids that differ
    only by it (counted as ``user_ids_differing_by_whitespace``) share a shard. A missing id, which
    quarantines its rows, hashes to one shard like any value."""
    return (user.str.strip_chars().hash(SHARD_SEED) % shards).cast(pl.UInt32)


def analyze(
    sources: Sequence[Source],
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
    encoded = encode_sources(sources, mapping, catalog, head=head)
    analysis = analyze_encoded(encoded, mapping, hash_events=hash_events, known=known, rules=rules)
    # also the rows no event came from (a wide row with no progress)
    analysis.rows_in = sum(rows_of(s.scan, head) for s in sources)
    return analysis


def analyze_encoded(
    encoded: Encoded,
    mapping: SourceMapping,
    *,
    hash_events: bool = False,
    known: pl.DataFrame | None = None,
    rules: Rules = DEFAULT_RULES,
) -> Analysis:
    """The analysis of encoded events: all of the export's, or one shard's (every event of a user is in
    one shard, so ordering, de-duplication and replay are the shard's own). Its ``rows_in`` counts the
    rows the events came from: a row without events belongs to no user, so to no shard."""
    codes, limits, names = encoded.codes, encoded.limits, encoded.names
    problem = pl.col("problem") != VALID
    try:
        # streaming: the export's own columns pass through in batches, only the result is held whole
        events = encoded.events.collect(engine="streaming")
        bad = events.filter(problem) if encoded.invalid is None else encoded.invalid.collect(engine="streaming")
    except pl.exceptions.PolarsError as exc:
        raise UnreadableSourceError(exc) from exc
    problems = bad.select(
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
    ).with_columns(
        # a typed time column keeps no text: its rows in quarantine show the time itself
        pl.coalesce("ts_raw", pl.col("ts").dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ")).alias("ts_raw")
    )
    _fail_on_undeclared_zone(problems.filter(pl.col("problem") == P_MAP), names)
    worded = problems.with_columns(
        reason(codes, limits).alias("reason"),
        quarantine_kind().alias("kind"),
        pl.col("file_order").replace_strict(range(len(names)), names, return_dtype=pl.String).alias("source_file"),
    )
    quarantine = worded.filter(pl.col("problem") > VALID).select(QUARANTINE_COLUMNS)
    left_out = pl.format("flow '{}' (flow_map: DROP)", "flow_slug")
    dropped = _counts(
        worded.filter(pl.col("problem") == DROPPED).select(
            pl.when(pl.col("action") == FLOW_DROP).then(left_out).otherwise("raw_event").alias("dropped")
        ),
        "dropped",
    )
    if encoded.invalid is None:
        rows = events.select("row_key", "problem")
        valid = events.filter(~problem) if problems.height else events
    else:
        rows = pl.concat([events.select("row_key", "problem"), bad.select("row_key", "problem")])
        valid = events
    del bad
    log = order_log(
        valid.select(EVENT_COLUMNS),
        len(codes.slugs),
        latest_row_only=mapping.state_rows,
        latest_status_wins=mapping.latest_status_wins,
    )
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
        **dropped_by_mapping(rows, worded),
    }
    target = target_from_log(log.select(LOG_COLUMNS), codes, rules)
    reasons = _counts(quarantine, "reason")
    rows_in = rows.get_column("row_key").n_unique()
    return Analysis(names, rows_in, rows, quarantine, target, counts, reasons, dropped, hashed)


def plan_requests(
    analysis: Analysis,
    *,
    mode: str = "state",
    baseline: StateFrames | None = None,
    rules: Rules = DEFAULT_RULES,
    current: StateFrames | None = None,
    policy: Policy | None = None,
) -> Prepared:
    """Requests from the baseline (remembered or read-back state; none for a backfill) to the target.
    With a baseline only user-flows whose target differs from it are planned.

    With a ``policy``, ``current`` is the state Frigade holds (the initial state for users not read)
    and ``baseline`` the base of a three-way merge (``transforms.merge``): the requests go from the
    current state to the merged target, which is also the expected state."""
    target = analysis.target
    existing: dict[str, int] | None = None
    conflicts: pl.DataFrame | None = None
    if policy is not None and mode == "state":
        target, merged = merge_target(target, current, baseline, policy, rules)
        existing, conflicts = merge_summary(merged, current, policy), merged.conflicts
        empty = StateFrames(pl.DataFrame(schema=REMEMBERED_FLOW_SCHEMA), pl.DataFrame(schema=REMEMBERED_STEP_SCHEMA))
        baseline = current if current is not None else empty
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
        baseline = StateFrames(*(f.filter(pl.col("user_id").is_in(users)) for f in baseline))
        changed = changed_user_flows(exp_flows, exp_steps, *baseline)
        start = as_current(*(f.join(changed, on=FLOW_KEY, how="semi") for f in baseline))
        planned = plan_state(target.only(changed), start, rules)
    planned = planned.with_columns(pl.format("{}|{}|{}", "user_id", "flow_slug", "seq").alias("request_id"))
    counts = account(analysis.rows_in, analysis.rows, planned) | not_migrated(analysis.quarantine)
    counts |= analysis.event_counts
    return Prepared(
        planned,
        analysis.quarantine,
        exp_flows,
        exp_steps,
        counts,
        analysis.quarantine_reasons,
        analysis.dropped_events,
        existing,
        conflicts,
    )


def rows_of(scan: pl.LazyFrame, head: int | None = None) -> int:
    """The rows of a source (its first ``head``), also those no event comes from."""
    return int((scan if head is None else scan.head(head)).select(pl.len()).collect().item())
