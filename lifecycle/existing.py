"""What the dry run says about users who already have state in Frigade: a bounded sample of the
export's users is read (the read Frigade's SDK uses, a POST with only ``userId``: it changes nothing,
but counts the user as active this month), and the policy's merge is worked out for them."""

from __future__ import annotations

import polars as pl

from frigade.client import FrigadeClient
from frigade.rules import Rules
from lifecycle.prepare import read_snapshot
from transforms.merge import Policy, merge_state, merge_summary
from transforms.state import FLOW_KEY
from transforms.sync import StateFrames, from_snapshot

#: how many of the export's users the dry run reads
PLAN_SAMPLE = 100


def sampled_users(targets: StateFrames, users: int = PLAN_SAMPLE) -> StateFrames:
    """The target state of ``users`` users picked by a hash of their id: the first ids sorted are
    often the oldest accounts, a biased sample of who has state. A sample of samples (shards) is
    the same as one sample of the whole, as each id's hash is its own."""
    keep = (
        targets.flows.select("user_id")
        .unique()
        .sort(pl.col("user_id").hash(seed=0), "user_id")
        .head(users)
        .select("user_id")
    )
    return StateFrames(*(f.join(keep, on="user_id", how="semi").sort(FLOW_KEY) for f in targets))


async def sample_existing(
    client: FrigadeClient, targets: StateFrames, policy: Policy, rules: Rules, concurrency: int
) -> dict[str, int]:
    """Read the sampled users' state; how many have any, and what ``policy`` would do to them."""
    users = targets.flows["user_id"].unique().sort().to_list()
    current = from_snapshot(await read_snapshot(client, users, concurrency))
    merged = merge_state(
        targets.flows, targets.steps, current, None, policy=policy, not_started_index=rules.not_started_index
    )
    return {"users_read": len(users), **merge_summary(merged, current, policy)}


def sample_rows(existing: dict[str, int], policy: str, users: int) -> list[tuple[str, str]]:
    """The dry run's lines about existing state."""
    read = existing["users_read"]
    rows = [
        (
            f"users with state in Frigade ({read} of {users} read, picked by a hash of the id)",
            str(existing.get("users_with_state", 0)),
        )
    ]
    if existing.get("user_flows_with_state"):
        did = (
            f"{existing.get('user_flows_kept', 0)} kept as they are, {existing.get('user_flows_merged', 0)} "
            f"merged (progress of both kept), {existing.get('user_flows_from_export', 0)} from the export"
            if policy == "merge"
            else f"{existing.get('user_flows_overwritten', 0)} set to the export"
        )
        rows.append(
            (f"their user-flows in the export, --policy {policy}", f"{existing['user_flows_with_state']}: {did}")
        )
    return rows
