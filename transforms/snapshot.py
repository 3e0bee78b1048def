"""The state Frigade returned, as snapshot rows: one per user x flow x step, the flow's fields repeated."""

from __future__ import annotations

from typing import Any

import polars as pl

from frigade.models import UserFlowStates

SNAPSHOT_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "flow_slug": pl.String(),
    "flow_started": pl.Boolean(),
    "flow_completed": pl.Boolean(),
    "flow_skipped": pl.Boolean(),
    "flow_visible": pl.Boolean(),
    "current_step_index": pl.Int64(),
    "current_step_id": pl.String(),
    "flow_last_action_at": pl.String(),
    "step_id": pl.String(),
    "step_index": pl.Int64(),
    "step_started": pl.Boolean(),
    "step_completed": pl.Boolean(),
    "step_skipped": pl.Boolean(),
    "step_last_action_at": pl.String(),
    "captured_at": pl.Float64(),
}


def snapshot_rows(user_id: str, states: UserFlowStates, at: float) -> list[dict[str, Any]]:
    """The rows of one user's returned state, captured at ``at`` (seconds since 1970)."""
    rows = []
    for flow in states.eligible_flows:
        fs = flow.state
        base = {
            "user_id": user_id,
            "flow_slug": flow.flow_slug,
            "flow_started": fs.started,
            "flow_completed": fs.completed,
            "flow_skipped": fs.skipped,
            "flow_visible": fs.visible,
            "current_step_index": fs.current_step_index,
            "current_step_id": fs.current_step_id,
            "flow_last_action_at": fs.last_action_at,
            "captured_at": at,
        }
        for i, step in enumerate(flow.data.steps):
            rows.append(
                base
                | {
                    "step_id": step.id,
                    "step_index": i,
                    "step_started": step.state.started,
                    "step_completed": step.state.completed,
                    "step_skipped": step.state.skipped,
                    "step_last_action_at": step.state.last_action_at,
                }
            )
    return rows
