"""``latest_status_wins``: a dismissal followed by a later start or completion of the same flow (a guide
shown again) is superseded, so the flow ends at its latest status and the dismissal is never sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from transforms.analysis import Source, analyze, plan_requests
from transforms.presets import resolve_mapping

from .test_messy import write
from .test_presets import load_catalog, scan

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


def planned(tmp_path: Path, rows: list[tuple[str, str]], doc: dict[str, Any] | None = None) -> tuple[Any, ...]:
    """(the final state, the actions planned, the counts) of the export through the real analysis."""
    path = export(tmp_path, rows)
    mapping = resolve_mapping("pendo", doc)
    analysis = analyze([Source(path.name, scan(path))], mapping, load_catalog())
    prepared = plan_requests(analysis)
    flows, _ = analysis.targets
    state = flows.filter(pl.col("user_id") == "v1").select("started", "completed", "skipped").row(0)
    return state, prepared.plan.get_column("action").to_list(), prepared.counts


def test_a_guide_shown_again_and_completed_ends_completed_not_skipped(tmp_path: Path) -> None:
    state, actions, counts = planned(tmp_path, RESHOWN)
    assert state == (True, True, False)
    assert "SKIPPED_FLOW" not in actions
    # the superseded dismissal's row is redundant: not dropped, not quarantined
    assert (counts["rows_in"], counts["rows_dropped"], counts["rows_quarantined"]) == (8, 0, 0)
    assert counts["rows_sent"] + counts["rows_redundant"] == 8


def test_a_guide_shown_again_but_not_finished_is_in_progress(tmp_path: Path) -> None:
    assert planned(tmp_path, RESHOWN[:3])[0] == (True, False, False)


def test_a_dismissal_that_is_the_latest_status_stands(tmp_path: Path) -> None:
    rows = [("welcome", "guideSeen"), ("welcome", "guideAdvanced"), ("sidebar", "guideDismissed")]
    state, actions, _ = planned(tmp_path, rows)
    assert state == (True, False, True)
    assert "SKIPPED_FLOW" in actions


def test_a_preset_may_say_a_dismissal_is_final(tmp_path: Path) -> None:
    state, actions, _ = planned(tmp_path, RESHOWN, {"latest_status_wins": False})
    assert state == (True, True, True)
    assert "SKIPPED_FLOW" in actions


def test_a_rows_own_events_never_undo_its_dismissal(tmp_path: Path) -> None:
    """A row written as STARTED_FLOW+SKIPPED_FLOW (Chameleon's ``exited``) stays dismissed; a later
    row's start undoes it."""
    rows = [("welcome", "guideDismissed"), ("welcome", "guideSeen")]
    doc = {"action_map": {"guideDismissed": "STARTED_STEP+SKIPPED_FLOW"}}
    assert planned(tmp_path, rows[:1], doc)[0] == (True, False, True)
    assert planned(tmp_path, rows, doc)[0] == (True, False, False)
