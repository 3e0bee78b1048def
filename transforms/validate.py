"""Validation against the catalog, then ordering and de-duplication.

Every row ends in exactly one of: valid (goes on to planning), dropped (a known non-state event),
quarantined (with a reason), or duplicate (a repeat of a valid row). Order of checks, first hit wins:
non-state event, mapping problems (time), user id, action, flow, step placement, step, data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import polars as pl

from frigade.rules import Action
from transforms.codes import STEP_ACTION_CODES, Codes, act_code
from transforms.schema import DROP, FLOW_DROP, MAPPED_DROP
from transforms.state import run_number


def catalog_frames(
    step_table: list[dict[str, object]], flow_status: dict[str, str]
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(flows, steps) lookup frames from the catalog's step table and every flow's status."""
    steps = pl.DataFrame(
        step_table,
        schema={"flow_slug": pl.String, "step_id": pl.String, "step_index": pl.Int64, "step_count": pl.Int64},
    ).lazy()
    flows = pl.DataFrame(
        {"flow_slug": list(flow_status), "flow_status": list(flow_status.values())},
        schema={"flow_slug": pl.String, "flow_status": pl.String},
    ).lazy()
    return flows, steps


#: problem codes, first hit wins; 0 is valid, DROPPED a known non-state event, the rest quarantine
VALID, DROPPED = 0, -1
#: the actions of a dropped event: a non-state one, or one the mapping drops itself (``transforms.schema``)
DROPS = [DROP, MAPPED_DROP, FLOW_DROP]
(
    P_MAP,
    P_TIME_EARLY,
    P_TIME_LATE,
    P_USER,
    P_ID_LONG,
    P_ACTION,
    P_UNKNOWN_ACTION,
    P_FLOW,
    P_UNKNOWN_FLOW,
    P_INACTIVE,
    P_NEEDS_STEP,
    P_FLOW_WITH_STEP,
    P_UNKNOWN_STEP,
    P_DATA,
    P_DATA_LARGE,
    P_ANONYMOUS,
) = range(1, 17)
#: problems of a row that names no user to migrate (none, or a visitor the source marks anonymous):
#: set aside, not counted as progress lost
NOT_A_USER = (P_USER, P_ANONYMOUS)
#: how ``transforms.rows`` words a ``reject_users`` match (its ``map_reason``)
ANONYMOUS_REASON = "anonymous user id"
MISSING_USER_REASON = "missing user id"

#: the longest user, group, flow or step id sent (bytes of UTF-8)
MAX_ID_BYTES = 512
#: the largest ``data`` sent (bytes of JSON text)
MAX_DATA_BYTES = 64 * 1024
#: the deepest ``data`` sent: what the JSON reader that checks it accepts (the wire encoder takes more)
MAX_DATA_DEPTH = 127
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=UTC)
MAX_FUTURE = timedelta(days=1)
#: the last time Python's datetime (and so the request encoder) holds, whatever the window says
LATEST_SENDABLE = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Limits:
    """What a value must be to be sent: times inside [earliest, latest] (a plausible window, which
    the wire format and Python's datetime also hold), ids and data within their bounds."""

    earliest: datetime = EARLIEST_TIME
    latest: datetime = field(default_factory=lambda: datetime.now(UTC) + MAX_FUTURE)
    max_future: timedelta = MAX_FUTURE

    @classmethod
    def window(cls, earliest: datetime, max_future: timedelta, now: datetime | None = None) -> Limits:
        try:
            latest = (now or datetime.now(UTC)) + max_future
        except OverflowError:
            latest = LATEST_SENDABLE
        return cls(earliest, min(latest, LATEST_SENDABLE), max_future)


def _too_long(col: pl.Expr) -> pl.Expr:
    return (col.str.len_bytes() > MAX_ID_BYTES).fill_null(False)


def _data_object(data: pl.Expr) -> pl.Expr:
    """``data`` is one JSON object: it starts with ``{`` and the JSON reader accepts the whole text
    (which it does not past MAX_DATA_DEPTH levels of nesting)."""
    return data.str.contains(r"^\s*\{") & data.str.json_path_match("$").is_not_null()


def encode(events: pl.LazyFrame, codes: Codes, limits: Limits | None = None) -> pl.LazyFrame:
    """Add the integer codes (``fl``, ``gs``, ``act``) and ``problem``: 0 for a valid event,
    ``DROPPED`` for a known non-state one, else the first check it fails (``reason`` words it).
    Every check is on numbers, a length or a null test, except that ``data``, where there is some, is
    read as JSON; only ``reason`` builds text, for the rows that need it. ``limits``: the time window
    (default: 2000-01-01 to a day from now)."""
    limits = limits or Limits()
    a, step, flow = pl.col("action"), pl.col("step_id"), pl.col("flow_slug")
    ts, data = pl.col("ts"), pl.col("data")
    fl = pl.col("fl")
    by_index = codes.step_by_index(fl, pl.col("step_index"))
    by_id = codes.step_by_id(fl, step)
    coded = events.with_columns(codes.flow(flow).alias("fl"), codes.action(a).alias("act")).with_columns(
        pl.when(pl.col("step_index").is_not_null()).then(by_index).otherwise(by_id).alias("gs"),
        codes.flow_attr(fl, tuple(s == "ACTIVE" for s in codes.statuses), pl.Boolean()).alias("_active"),
    )
    is_step_action = pl.col("act").is_in(STEP_ACTION_CODES)
    has_step = step.is_not_null() | pl.col("step_index").is_not_null()
    problem = (
        pl.when(a.is_in(DROPS))
        .then(DROPPED)
        .when(pl.col("map_reason").str.starts_with(ANONYMOUS_REASON))
        .then(P_ANONYMOUS)
        .when(pl.col("map_reason").is_not_null())
        .then(P_MAP)
        .when(ts < limits.earliest)
        .then(P_TIME_EARLY)
        .when(ts > limits.latest)
        .then(P_TIME_LATE)
        .when(pl.col("user_id").is_null())
        .then(P_USER)
        .when(_too_long(pl.col("user_id")) | _too_long(pl.col("group_id")) | _too_long(flow) | _too_long(step))
        .then(P_ID_LONG)
        .when(a.is_null())
        .then(P_ACTION)
        .when(pl.col("act").is_null())
        .then(P_UNKNOWN_ACTION)
        .when(flow.is_null())
        .then(P_FLOW)
        .when(fl.is_null())
        .then(P_UNKNOWN_FLOW)
        .when(~pl.col("_active"))
        .then(P_INACTIVE)
        .when(is_step_action & ~has_step)
        .then(P_NEEDS_STEP)
        .when(~is_step_action & has_step)
        .then(P_FLOW_WITH_STEP)
        .when(is_step_action & pl.col("gs").is_null())
        .then(P_UNKNOWN_STEP)
        .when(data.is_not_null() & (data.str.len_bytes() > MAX_DATA_BYTES))
        .then(P_DATA_LARGE)
        .when(data.is_not_null() & ~_data_object(data))
        .then(P_DATA)
        .otherwise(VALID)
        .cast(pl.Int8)
    )
    return coded.with_columns(
        problem.alias("problem"),
        pl.when(is_step_action).then(pl.col("gs")).alias("gs"),
    ).drop("_active")


def _iso(value: datetime | pl.Expr) -> pl.Expr:
    expr = pl.lit(value, pl.Datetime("us", "UTC")) if isinstance(value, datetime) else value
    return expr.dt.to_string("%Y-%m-%dT%H:%M:%SZ")


def _in_window(micros: pl.Expr, limits: Limits) -> pl.Expr:
    lo, hi = (
        pl.lit(t, pl.Datetime("us", "UTC")).dt.epoch("us").cast(pl.Float64) for t in (limits.earliest, limits.latest)
    )
    return (micros >= lo) & (micros <= hi)


def _time_reason(limits: Limits) -> tuple[pl.Expr, pl.Expr]:
    """(early, late) reasons, each naming the unit mix-up that would put the time in the window. The
    time itself is not in the words (the row's ts_raw shows it), so a column read in the wrong unit
    gives one reason, not one per row."""
    micros = pl.col("ts").dt.epoch("us").cast(pl.Float64)
    ahead = f"{limits.max_future.total_seconds() / 3600:g}h"
    early = pl.format(
        "time before {} (earliest_time): {}",
        _iso(limits.earliest),
        pl.when(_in_window(micros * 1e3, limits))
        .then(pl.lit("epoch seconds read as milliseconds (or ms as microseconds)? check time_format"))
        .when(_in_window(micros * 1e6, limits))
        .then(pl.lit("epoch seconds read as microseconds? check time_format"))
        .otherwise(pl.lit("check the time column and time_format")),
    )
    late = pl.format(
        "time more than {} in the future (max_future): {}",
        pl.lit(ahead),
        pl.when(_in_window(micros / 1e3, limits))
        .then(pl.lit("epoch milliseconds read as seconds (or microseconds as ms)? check time_format"))
        .when(_in_window(micros / 1e6, limits))
        .then(pl.lit("epoch microseconds read as seconds? check time_format"))
        .otherwise(pl.lit("check the time column and time_format")),
    )
    return early, late


def reason(codes: Codes, limits: Limits | None = None) -> pl.Expr:
    """The words for ``problem`` (null for a valid event). Run it on the rows that are not valid:
    it formats text on every row it sees."""
    a, step, flow, code = pl.col("action"), pl.col("step_id"), pl.col("flow_slug"), pl.col("problem")
    early, late = _time_reason(limits or Limits())
    ids = {"user": pl.col("user_id"), "group": pl.col("group_id"), "flow": flow, "step": step}
    long_id: pl.Expr = pl.lit(None, pl.String)
    for name, col in reversed(ids.items()):
        long_id = pl.when(_too_long(col)).then(pl.lit(name)).otherwise(long_id)
    named_step = pl.coalesce(step, pl.col("step_index").cast(pl.String))
    status = codes.flow_attr(pl.col("fl"), codes.statuses, pl.String())
    return (
        pl.when(code == DROPPED)
        .then(pl.format("non-state event '{}'", pl.col("raw_event")))
        .when((code == P_MAP) | (code == P_ANONYMOUS))
        .then(pl.col("map_reason"))
        .when(code == P_TIME_EARLY)
        .then(early)
        .when(code == P_TIME_LATE)
        .then(late)
        .when(code == P_USER)
        .then(pl.lit(MISSING_USER_REASON))
        .when(code == P_ID_LONG)
        .then(pl.format("{} id longer than {} bytes", long_id, pl.lit(MAX_ID_BYTES)))
        .when(code == P_ACTION)
        .then(pl.lit("missing action"))
        .when(code == P_UNKNOWN_ACTION)
        .then(pl.format("unknown action '{}'", pl.col("raw_event")))
        .when(code == P_FLOW)
        .then(pl.lit("missing flow"))
        .when(code == P_UNKNOWN_FLOW)
        .then(pl.format("unknown flow '{}' (not in the catalog)", flow))
        .when(code == P_INACTIVE)
        .then(pl.format("flow '{}' is {} (only ACTIVE flows are written)", flow, status))
        .when(code == P_NEEDS_STEP)
        .then(pl.format("{} needs a step", a))
        .when(code == P_FLOW_WITH_STEP)
        .then(pl.format("{} is a flow action but the row names step '{}'", a, named_step))
        .when(code == P_UNKNOWN_STEP)
        .then(pl.format("unknown step '{}' in flow '{}'", named_step, flow))
        .when(code == P_DATA)
        .then(
            pl.when(pl.col("data").str.count_matches(r"[\[{]") > MAX_DATA_DEPTH)
            .then(pl.lit(f"data is not a JSON object of at most {MAX_DATA_DEPTH} levels"))
            .otherwise(pl.lit("data is not a JSON object"))
        )
        .when(code == P_DATA_LARGE)
        .then(pl.lit(f"data larger than {MAX_DATA_BYTES // 1024} KiB"))
        .otherwise(None)
    )


def status() -> pl.Expr:
    code = pl.col("problem")
    return (
        pl.when(code == VALID)
        .then(pl.lit("valid"))
        .when(code == DROPPED)
        .then(pl.lit("dropped"))
        .otherwise(pl.lit("quarantined"))
    )


def classify(
    events: pl.LazyFrame, flows: pl.LazyFrame, steps: pl.LazyFrame, limits: Limits | None = None
) -> pl.LazyFrame:
    """Add ``status`` (valid | dropped | quarantined) and ``reason``, with steps resolved to ids and
    their position (``step_index``) in the flow. (The pipeline runs ``encode`` and words reasons only
    for the rows that need them; this is the same, readable, for small frames.)"""
    codes = Codes.from_frames(flows, steps)
    gs = pl.col("gs")
    resolved = gs.replace_strict(list(range(len(codes.step_ids))), list(codes.step_ids), default=None)
    index = (gs.cast(pl.Int64) - codes.offset_of(pl.col("fl"))).alias("_ix")
    return (
        encode(events, codes, limits)
        .with_columns(status().alias("status"), reason(codes, limits).alias("reason"), index)
        .with_columns(
            resolved.cast(pl.String).alias("step_id"),
            pl.coalesce(pl.col("step_index"), pl.col("_ix")).alias("step_index"),
        )
        .drop("_ix")
    )


def _hash(user: pl.Expr) -> pl.Expr:
    return user.hash()


def whitespace_twins(users: pl.Series) -> int:
    """How many distinct user ids differ from another only by leading or trailing whitespace (ids are
    used as written: such ids are different users unless the mapping sets ``trim_user_ids``)."""
    padded = users.filter(users.str.contains(r"^\s|\s$")).unique()
    if padded.is_empty():
        return 0
    stripped = padded.str.strip_chars().unique()
    near = pl.DataFrame({"user_id": users}).filter(pl.col("user_id").str.strip_chars().is_in(stripped.implode()))
    groups = near.unique().group_by(pl.col("user_id").str.strip_chars().alias("core")).len()
    return int(groups.filter(pl.col("len") > 1).get_column("len").sum())


def order_log(
    valid: pl.DataFrame,
    flows: int,
    user_hash: Callable[[pl.Expr], pl.Expr] = _hash,
    *,
    latest_row_only: bool = False,
    latest_status_wins: bool = False,
) -> pl.DataFrame:
    """Valid events sorted into the log every later stage reads, with ``uf`` (the user-flow's number:
    each user-flow is one contiguous run) and ``duplicate``. Needs user_id, fl, gs, act, ts, row_key
    and event_id; every other column is carried along. ``flows``: how many flow codes there are.

    Order: by user, flow (``fl``) and time; ties keep the export's own order (``row_key``: file given
    first, then row, which is the order the source recorded them in), and the events one row became
    keep the order the mapping derived them in. Users are sorted by a hash of their id, with the flow
    code in its low bits, so the sort is on three numbers; should two ids share their hash bits, the
    log is sorted again with the ids themselves as the key.

    Duplicates: the same user and source ``event_id`` (ids are the source's own, so they identify an
    event across overlapping export files too; the same id on two users' events is two events, as
    when per-file counters restart), or where the source has none, the same (user, flow, step, action,
    time). The first in order is kept. Either way a user's duplicates depend on that user's rows alone.

    ``latest_row_only`` (state exports, whose rows are each a user's whole state of a flow): the events
    of every row but the user-flow's latest (by time, then export order) are duplicates too, superseded,
    so that a state re-exported by overlapping windows ends in its latest copy.

    ``latest_status_wins``: a dismissal that a later start or completion follows is a duplicate too
    (``supersede_dismissals``)."""
    user, h = pl.col("user_id"), pl.col("_h")
    bits = max(1, flows.bit_length())
    low = (1 << bits) - 1
    packed = (user_hash(user).cast(pl.UInt64) & ~pl.lit(low, pl.UInt64)) | pl.col("fl").cast(pl.UInt64)
    log = valid.with_columns(packed.alias("_h")).sort("_h", "ts", "row_key", maintain_order=True)
    runs = run_number("_h")
    # Two ids sharing the hash bits would interleave: then the ids themselves are the key.
    same_bits = (h // (1 << bits)) == (h.shift() // (1 << bits))
    if log.select((same_bits & (user != user.shift())).any()).item():
        log = log.sort("user_id", "fl", "ts", "row_key", maintain_order=True)
        runs = run_number("user_id", "fl")
    log = log.with_columns(runs.alias("uf")).drop("_h")
    n = log.height
    # Only events sharing their user-flow and time with a neighbour can repeat one another: the
    # natural key is checked on those few, not on every event.
    same = (pl.col("uf") == pl.col("uf").shift()) & (pl.col("ts") == pl.col("ts").shift())
    tied = log.select((same | same.shift(-1)).fill_null(False).arg_true()).to_series()
    duplicate = pl.repeat(False, n, dtype=pl.Boolean, eager=True).alias("duplicate")
    current = pl.lit(True)
    if latest_row_only and n:
        # the log is sorted by (user-flow, time, row): a run's last event belongs to its latest row;
        # the other rows' events are superseded, and no longer compete in the checks below
        current = pl.col("row_key") == pl.col("row_key").last().over("uf")
        superseded = log.select(~current).to_series()
        duplicate = superseded.alias("duplicate")
        tied = tied.filter(tied.is_in(superseded.not_().arg_true().implode()))
    if tied.len():
        sub = log[tied].select(pl.col("event_id").is_null() & ~pl.struct("uf", "ts", "gs", "act").is_first_distinct())
        repeats = tied.filter(sub.to_series())
        if repeats.len():
            duplicate = duplicate.scatter(repeats, True)
    if log.get_column("event_id").null_count() < n:
        with_id = log.select((pl.col("event_id").is_not_null() & current).arg_true()).to_series()
        first = log[with_id].select(pl.struct("user_id", "event_id").is_first_distinct()).to_series()
        repeats = with_id.filter(~first)
        if repeats.len():
            duplicate = duplicate.scatter(repeats, True)
    log = log.with_columns(duplicate)
    return supersede_dismissals(log) if latest_status_wins else log


_SKIPPED_FLOW = act_code(Action.SKIPPED_FLOW)
#: what a guide shown again writes: any of these after a dismissal means the dismissal is over
_RESUMING = [
    act_code(a) for a in (Action.STARTED_FLOW, Action.STARTED_STEP, Action.COMPLETED_STEP, Action.COMPLETED_FLOW)
]


def supersede_dismissals(log: pl.DataFrame) -> pl.DataFrame:
    """Mark as duplicate each dismissal (SKIPPED_FLOW) that a later start or completion of the same
    user-flow follows (a guide shown again): the latest status wins, where Frigade would otherwise keep
    the flow skipped beside the later progress (only a reset clears a skip). The superseded dismissal is
    never sent and its row counts as redundant.

    Only events of rows without a dismissal of their own count as later: a row written as
    ``STARTED_FLOW+SKIPPED_FLOW``, or a state row whose progress steps are derived after its dismissal,
    does not undo itself. On the sorted log this is one backward fill: the user-flow of the next
    counting event after each position."""
    act = pl.col("act")
    is_skip = (act == _SKIPPED_FLOW) & ~pl.col("duplicate")
    skip_rows = log.filter(is_skip).get_column("row_key").unique()
    if skip_rows.is_empty():
        return log
    counts = act.is_in(_RESUMING) & ~pl.col("duplicate") & ~pl.col("row_key").is_in(skip_rows.implode())
    next_uf = pl.when(counts).then(pl.col("uf")).backward_fill().shift(-1)
    superseded = is_skip & (next_uf == pl.col("uf")).fill_null(False)
    return log.with_columns(pl.col("duplicate") | superseded)


#: rows per file in ``row_key``: file order * ROW_SPAN + row
ROW_SPAN = 1 << 40


def row_key(file_order: pl.Expr, source_row: pl.Expr) -> pl.Expr:
    """One integer naming a source row across all input files."""
    return file_order * ROW_SPAN + source_row
