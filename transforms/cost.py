"""What a plan costs the account: requests, distinct users (MAU) and the webhook deliveries it fires.

Frigade sends a webhook for each started / completed / skipped flow and started / completed step; the
count is one delivery per planned write of that action, an upper bound: the push does not send a
write whose effect the server already shows."""

from __future__ import annotations

import polars as pl

#: action -> the webhook event it fires (other actions fire none)
WEBHOOK_EVENTS: dict[str, str] = {
    "STARTED_FLOW": "flow started",
    "COMPLETED_FLOW": "flow completed",
    "SKIPPED_FLOW": "flow skipped",
    "STARTED_STEP": "step started",
    "COMPLETED_STEP": "step completed",
}


def webhook_deliveries(plan: pl.DataFrame) -> dict[str, int]:
    """Deliveries by webhook event, every event listed (0 where the plan fires none)."""
    by_action = plan.group_by("action").len()
    counts = {str(a): int(n) for a, n in by_action.iter_rows()}
    return {event: counts.get(action, 0) for action, event in WEBHOOK_EVENTS.items()}


def plan_cost(plan: pl.DataFrame) -> dict[str, int]:
    """requests, users (each counts toward the month's MAU) and webhook deliveries in all."""
    hooks = webhook_deliveries(plan)
    return {
        "requests": plan.height,
        "users": plan.get_column("user_id").n_unique() if plan.height else 0,
        "webhook_deliveries": sum(hooks.values()),
    }
