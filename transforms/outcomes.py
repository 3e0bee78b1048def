"""What a run's outcomes add up to: tallies, the users left at their target, and the verdict.

Pure functions over the plan, the outcome log and the reconciliation's mismatches (polars frames).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import polars as pl

#: outcomes of a request that took effect on the server
TOOK_EFFECT = ("sent", "resolved_applied")
#: outcomes of a request that did not land and will not on its own
NOT_LANDED = ("rejected", "failed", "held_unpredicted")
#: a user-flow with one of these is expected not to match the export (--max-failures decides)
UNSETTLED = (*NOT_LANDED, "held")


def latest_outcomes(outcomes: pl.DataFrame) -> pl.DataFrame:
    """Each request's latest outcome over every attempt."""
    return outcomes.sort("attempt", "at").unique("request_id", keep="last", maintain_order=True)


def tally(frame: pl.DataFrame, column: str) -> dict[str, int]:
    """How many rows hold each value of ``column``, counted by polars (no Python object per row)."""
    return {str(k): int(v) for k, v in frame.group_by(column).len().sort(column).iter_rows()}


def took_effect(outcomes: pl.DataFrame) -> pl.DataFrame:
    return outcomes.filter(pl.col("outcome").is_in(TOOK_EFFECT))


@dataclass(frozen=True)
class Verdict:
    """What the outcomes and the reconciliation say about a run, for run.json and its status."""

    outcomes: dict[str, int]
    failed_users: int
    failure_reasons: dict[str, int]
    mismatches: int
    #: mismatches on user-flows whose requests all landed: Frigade holds what the export did not say
    unexplained_mismatches: int
    mismatched_users: int
    users: dict[str, int]

    def failed(self, failure_limit: int) -> bool:
        return self.failed_users > failure_limit or self.unexplained_mismatches > 0

    def fields(self) -> dict[str, Any]:
        return {
            "outcomes": self.outcomes,
            "failed_users": self.failed_users,
            "failure_reasons": self.failure_reasons,
            "mismatches": self.mismatches,
            "unexplained_mismatches": self.unexplained_mismatches,
            "mismatched_users": self.mismatched_users,
            **self.users,
        }


def verdict(plan: pl.DataFrame, latest: pl.DataFrame, mismatches: pl.DataFrame, reconciled: pl.Series) -> Verdict:
    """``latest``: each request's latest outcome; ``reconciled``: the users the reconciliation covered."""
    # a user held because the server's state was not the one predicted did not land either
    bad = latest.filter(pl.col("outcome").is_in(NOT_LANDED))
    unsettled = latest.filter(pl.col("outcome").is_in(UNSETTLED)).select("user_id", "flow_slug").unique()
    unexplained = mismatches.join(unsettled, on=["user_id", "flow_slug"], how="anti")
    # the whole message, prefixed by its error class when there is one
    reasons = Counter(
        (r["message"] or "") if r["error_class"] is None else f"{r['error_class']}: {r['message'] or ''}".rstrip(": ")
        for r in bad.select("error_class", "message").to_dicts()
    )
    return Verdict(
        outcomes=tally(latest, "outcome"),
        failed_users=bad["user_id"].n_unique() if bad.height else 0,
        failure_reasons=dict(reasons),
        mismatches=mismatches.height,
        unexplained_mismatches=unexplained.height,
        mismatched_users=mismatches["user_id"].n_unique() if mismatches.height else 0,
        users=user_tallies(plan, latest, mismatches, reconciled),
    )


def user_tallies(
    plan: pl.DataFrame, latest: pl.DataFrame, mismatches: pl.DataFrame, reconciled: pl.Series
) -> dict[str, int]:
    """Every reconciled user in one of: matching the export, differing from it, or unfinished (a
    request of theirs has no outcome yet: a stop came first); and how many had a request accepted."""
    accepted = took_effect(latest).get_column("user_id").unique()
    users = reconciled.unique()
    unfinished = plan.join(latest.select("request_id"), on="request_id", how="anti").get_column("user_id").unique()
    off = mismatches.get_column("user_id").unique()
    differing = off.filter(~off.is_in(unfinished.implode()))
    return {
        "users_sent": accepted.len(),
        "users_not_reached": unfinished.len(),
        "users_differing": differing.len(),
        "users_matching": users.len() - unfinished.len() - differing.len(),
    }


def left_at_target(
    analysed: pl.DataFrame, plan: pl.DataFrame, latest: pl.DataFrame, mismatches: pl.DataFrame
) -> pl.DataFrame:
    """The rows of ``analysed`` (by user_id) of the users whose every planned request took effect and
    whose state matched: the users a run left exactly at their target."""
    settled = latest.filter(pl.col("outcome").is_in([*TOOK_EFFECT, "already_in_effect"])).select("request_id")
    unsent = plan.join(settled, on="request_id", how="anti").get_column("user_id")
    unclean = pl.concat([unsent, mismatches.get_column("user_id")]).unique()
    return analysed.filter(~pl.col("user_id").is_in(unclean.implode()))


def users_without_state(outcomes: pl.DataFrame, snapshot_users: pl.DataFrame) -> list[str]:
    """Users with a request that took effect but no state in the snapshot (the kill of an earlier
    attempt can lose its last seconds of them), sorted."""
    took = took_effect(outcomes).select("user_id").unique()
    return took.join(snapshot_users.unique(), on="user_id", how="anti")["user_id"].sort().to_list()


def per_flow(plan: pl.DataFrame, expected_flows: pl.DataFrame) -> list[dict[str, Any]]:
    """Per flow: users, how many the export has started / completed / skipped, and requests planned."""
    req = plan.group_by("flow_slug").agg(pl.len().alias("requests"))
    st = expected_flows.group_by("flow_slug").agg(
        pl.len().alias("users"),
        pl.col("started").sum(),
        pl.col("completed").sum(),
        pl.col("skipped").sum(),
    )
    return st.join(req, on="flow_slug", how="left").fill_null(0).sort("flow_slug").to_dicts()
