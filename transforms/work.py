"""From the plan to the push's work: which requests are still pending, in which order users go, how
they are batched, and each user's requests as the push's ``PlannedRequest`` fields."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

import polars as pl

from frigade.catalog import Catalog
from frigade.rules import DEFAULT_RULES, Action, FlowState, Rules, StepState, initial_state

#: outcomes that settle a request for good (a failed one is tried again)
DONE_OUTCOMES = ("sent", "resolved_applied", "rejected", "already_in_effect", "held_replan")


def flow_states(flows: pl.DataFrame, steps: pl.DataFrame, catalog: Catalog) -> dict[tuple[str, str], FlowState]:
    """Remembered-state frames as rules states (for the few user-flows a push needs them for)."""
    by_flow: dict[tuple[str, str], dict[str, StepState]] = {}
    for r in steps.iter_rows(named=True):
        by_flow.setdefault((r["user_id"], r["flow_slug"]), {})[r["step_id"]] = StepState(
            started=r["step_started"], completed=r["step_completed"], skipped=r["step_skipped"]
        )
    out: dict[tuple[str, str], FlowState] = {}
    for r in flows.iter_rows(named=True):
        flow = catalog.get(r["flow_slug"])
        if flow is None:
            continue
        key = (r["user_id"], r["flow_slug"])
        got = by_flow.get(key, {})
        out[key] = FlowState(
            step_ids=flow.step_ids,
            started=r["started"],
            completed=r["completed"],
            skipped=r["skipped"],
            current_step_index=r["current_step_index"],
            steps=tuple(got.get(s, StepState()) for s in flow.step_ids),
        )
    return out


def pending_requests(plan: pl.DataFrame, outcomes: pl.DataFrame) -> pl.DataFrame:
    """Plan rows with no outcome that settles them (a failed one is tried again)."""
    if outcomes.is_empty():
        return plan
    # Held behind a rejection stays held; held behind a failure (gave up, conflict) is tried again.
    rejected = outcomes.filter(pl.col("outcome") == "rejected").select("user_id", "flow_slug").unique()
    held = outcomes.filter(pl.col("outcome") == "held").join(rejected, on=["user_id", "flow_slug"], how="semi")
    done = pl.concat(
        [outcomes.filter(pl.col("outcome").is_in(DONE_OUTCOMES)).select("request_id"), held.select("request_id")]
    ).unique()
    # plan order: dispatch and its journal follow it, so a resume must not reorder the users
    return plan.join(done, on="request_id", how="anti", maintain_order="left")


def user_order(plan: pl.DataFrame) -> dict[str, int]:
    """Each user's place in plan order: the dispatch journal's unit."""
    users = plan.select("user_id").unique(maintain_order=True)["user_id"].to_list()
    return {u: i for i, u in enumerate(users)}


def iter_batches(pending: pl.DataFrame, batch_requests: int) -> Iterator[pl.DataFrame]:
    """Whole users per batch, about ``batch_requests`` requests each, in plan order."""
    if pending.is_empty():
        return
    per_user = pending.group_by("user_id", maintain_order=True).len()
    batch_no = (per_user["len"].cum_sum() - 1) // max(batch_requests, 1)
    keyed = per_user.with_columns(batch_no.alias("batch")).select("user_id", "batch")
    tagged = pending.join(keyed, on="user_id", how="left", maintain_order="left")
    for (_,), part in tagged.group_by("batch", maintain_order=True):
        yield part.drop("batch")


def longest_users_first(batch: pl.DataFrame, chunk_users: int) -> pl.DataFrame:
    """The batch's users, ``chunk_users`` at a time in plan order, and within each such chunk by how
    many requests each has, most first (plan order among equals); each user's requests kept together
    and in order. A user's requests go one after the other, one round trip each, so a long user
    dispatched last would trail alone after every other had finished, and the push would end at a
    fraction of its rate (longest-processing-time-first scheduling). Chunks keep the dispatch close to
    plan order, which the dispatch journal reserves in (``chunk_reach``)."""
    if batch.is_empty():
        return batch
    # the row number as a column first: an int_range inside a window counts within each user
    first = pl.col("_i").min().over("user_id")
    chunk = (first.rank("dense") - 1) // _even_chunk(batch["user_id"].n_unique(), chunk_users)
    keys = [chunk, pl.len().over("user_id"), first, pl.col("_i")]
    return batch.with_row_index("_i").sort(keys, descending=[False, True, False, False]).drop("_i")


def _even_chunk(users: int, chunk_users: int) -> int:
    """Chunks of at most ``chunk_users``, as even as can be: a last chunk of a few users would go
    after every other, and a long user among them would trail alone at the end of the push."""
    chunks = max(1, math.ceil(users / max(chunk_users, 1)))
    return max(1, math.ceil(users / chunks))


def chunk_reach(batch: pl.DataFrame, chunk_users: int, index: Mapping[str, int]) -> dict[str, int]:
    """For each user of ``batch`` (in plan order), the highest plan ``index`` among the users of its
    chunk (``longest_users_first``): what the journal must reserve before the user is dispatched."""
    users = batch.select("user_id").unique(maintain_order=True)["user_id"].to_list()
    size = _even_chunk(len(users), chunk_users)
    reach: dict[str, int] = {}
    for at in range(0, len(users), size):
        chunk = users[at : at + size]
        top = max(index.get(u, 0) for u in chunk)
        reach.update(dict.fromkeys(chunk, top))
    return reach


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
    """Every active flow's initial state: where a backfill starts each user."""
    return {f.slug: initial_state(f.step_ids, rules) for f in catalog.active}
