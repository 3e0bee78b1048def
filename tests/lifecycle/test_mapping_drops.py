"""What a mapping drops on purpose: an ``action_map`` entry or a whole flow (``flow_map``) mapped to DROP
is dropped, counted apart from non-state events and never quarantined; the row accounting closes."""

from __future__ import annotations

from pathlib import Path

from emulator.sample import sample_catalog
from lifecycle.exports import plan_exports, sources_of
from transforms.accounting import accounting_closes
from transforms.analysis import export_coverage
from transforms.presets import resolve_mapping

HEADER = "user_id,flow_slug,step_id,action,created_at\n"
ROWS = [
    "u1,flow_welcome_tour,,STARTED_FLOW,2024-03-01T10:00:00Z",
    "u1,flow_old_tour,,STARTED_FLOW,2024-03-01T10:01:00Z",  # a flow left out
    "u2,flow_old_tour,step-9,COMPLETED_STEP,2024-03-01T10:02:00Z",  # its unknown step does not matter
    "u3,flow_old_tour,welcome,seen,2024-03-01T10:03:00Z",  # nor its two-action event
    "u1,flow_welcome_tour,,tooltip_shown_v1,2024-03-01T10:04:00Z",  # the mapping's own DROP
    "u1,flow_welcome_tour,,BUTTON_CLICKED,2024-03-01T10:05:00Z",  # a non-state event (the preset's)
    "u3,flow_welcome_tour,welcome,seen,2024-03-01T10:06:00Z",  # one row, two events
]


def test_the_mappings_drops_are_counted_apart_and_never_quarantined(tmp_path: Path) -> None:
    export = tmp_path / "e.csv"
    export.write_text(HEADER + "\n".join(ROWS) + "\n")
    doc = {
        "flow_map": {"flow_old_tour": "DROP"},
        "action_map": {"tooltip_shown_v1": "DROP", "seen": "STARTED_FLOW+STARTED_STEP"},
        "flow_actions_ignore_step": True,
    }
    prepared = plan_exports([export], resolve_mapping("long", doc), sample_catalog())
    c = prepared.counts
    assert prepared.quarantine.height == 0
    assert (c["rows_in"], c["rows_quarantined"], c["rows_dropped"]) == (7, 0, 5)
    assert (c["rows_dropped_by_mapping"], c["rows_flow_left_out"]) == (4, 3)
    assert accounting_closes(c)
    assert prepared.dropped_events == {
        "flow 'flow_old_tour' (flow_map: DROP)": 3,
        "BUTTON_CLICKED": 1,
        "tooltip_shown_v1": 1,
    }
    assert set(prepared.plan.get_column("flow_slug")) == {"flow_welcome_tour"}


def test_one_event_per_row_counts_the_same_way(tmp_path: Path) -> None:
    """Without a two-action map the accounting counts events, not rows grouped: the same buckets."""
    export = tmp_path / "e.csv"
    export.write_text(HEADER + "\n".join(r for r in ROWS if ",seen," not in r) + "\n")
    doc = {"flow_map": {"flow_old_tour": "DROP"}, "action_map": {"tooltip_shown_v1": "DROP"}}
    c = plan_exports([export], resolve_mapping("long", doc), sample_catalog()).counts
    assert (c["rows_in"], c["rows_dropped"], c["rows_dropped_by_mapping"], c["rows_flow_left_out"]) == (5, 4, 3, 2)
    assert c["rows_quarantined"] == 0
    assert accounting_closes(c)


def test_coverage_says_which_drops_the_mapping_asked_for(tmp_path: Path) -> None:
    export = tmp_path / "e.csv"
    export.write_text(HEADER + "\n".join(r for r in ROWS if ",seen," not in r) + "\n")
    mapping = resolve_mapping(
        "long", {"flow_map": {"flow_old_tour": "DROP"}, "action_map": {"tooltip_shown_v1": "DROP"}}
    )
    cov = export_coverage(sources_of([export], mapping), mapping, sample_catalog())
    becomes = {e: b for e, _, _, b, _ in cov.iter_rows()}
    assert becomes["tooltip_shown_v1"] == "dropped: the mapping's action_map says DROP"
    assert becomes["BUTTON_CLICKED"] == "dropped: not onboarding state"
    assert becomes["COMPLETED_STEP"] == "dropped: the mapping's flow_map says DROP"
