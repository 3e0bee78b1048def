"""``latest_status_wins``: a dismissal followed by a later start or completion of the same flow (a guide
shown again) is superseded, so the flow ends at its latest status and the dismissal is never sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from transforms.analysis import Source, analyze, plan_requests

from .test_messy import run, write
from .test_presets import load_catalog, scan, state_of

HEADER = "visitor_id,guide_id,guide_step_id,type,timestamp\n"
T0 = 1709283600000
#: a guide dismissed on its first step, shown again later and completed
RESHOWN = [
    ("welcome", "guideSeen"),
    ("welcome", "guideDismissed"),
    ("welcome", "guideSeen"),
    ("welcome", "guideAdvanced"),
    ("sidebar", "guideSeen"),
    ("sidebar", "guideAdvanced"),
    ("search", "guideSeen"),
    ("search", "guideAdvanced"),
]


def export(tmp_path: Path, rows: list[tuple[str, str]]) -> Path:
    text = HEADER + "".join(f"v1,flow_welcome_tour,{s},{t},{T0 + 60_000 * i}\n" for i, (s, t) in enumerate(rows))
    return write(tmp_path, "guides.csv", text)


def flow_state(tmp_path: Path, rows: list[tuple[str, str]], doc: dict[str, Any] | None = None) -> dict[str, Any]:
    out = run(export(tmp_path, rows), "pendo", doc)
    state: dict[str, Any] = state_of(out)["v1"]["flow_welcome_tour"]
    return state


def test_a_guide_shown_again_and_completed_ends_completed_not_skipped(tmp_path: Path) -> None:
    out = run(export(tmp_path, RESHOWN), "pendo")
    dismissed = out.filter(pl.col("source_row") == 2)
    assert dismissed.select("status", "reason").row(0) == (
        "redundant",
        "'guideDismissed' superseded by a later start or completion (latest_status_wins)",
    )
    state = state_of(out)["v1"]["flow_welcome_tour"]
    assert (state["started"], state["completed"], state["skipped"]) == (True, True, False)


def test_the_superseded_dismissal_is_not_sent_and_counts_as_redundant(tmp_path: Path) -> None:
    from transforms.presets import resolve_mapping

    path = export(tmp_path, RESHOWN)
    prepared = plan_requests(analyze([Source(path.name, scan(path))], resolve_mapping("pendo"), load_catalog()))
    assert "SKIPPED_FLOW" not in prepared.plan.get_column("action").to_list()
    c = prepared.counts
    assert (c["rows_in"], c["rows_dropped"], c["rows_quarantined"]) == (8, 0, 0)
    assert c["rows_sent"] + c["rows_redundant"] == 8


def test_a_guide_shown_again_but_not_finished_is_in_progress(tmp_path: Path) -> None:
    state = flow_state(tmp_path, RESHOWN[:3])
    assert (state["started"], state["completed"], state["skipped"]) == (True, False, False)


def test_a_dismissal_that_is_the_latest_status_stands(tmp_path: Path) -> None:
    state = flow_state(
        tmp_path, [("welcome", "guideSeen"), ("welcome", "guideAdvanced"), ("sidebar", "guideDismissed")]
    )
    assert (state["completed"], state["skipped"]) == (False, True)


def test_a_preset_may_say_a_dismissal_is_final(tmp_path: Path) -> None:
    state = flow_state(tmp_path, RESHOWN, {"latest_status_wins": False})
    assert (state["completed"], state["skipped"]) == (True, True)
