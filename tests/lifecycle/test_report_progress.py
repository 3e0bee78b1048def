"""What a person reads: the report's figures add up in words that match what happened, the progress
line's rate never shows more than was possible and its ETA holds still at a steady rate, and
quarantined rows come with where to look and what the catalog lacks."""

from __future__ import annotations

import io
import itertools
import re
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console

from frigade.push import Outcome
from lifecycle.progress import PlanProgress, PushProgress, RateEstimate
from lifecycle.report import (
    any_progress_lost,
    bar_chart,
    progress_lost,
    reconciliation_line,
    render,
    request_counts,
    requests_line,
    summary_rows,
)
from transforms.quarantine import catalog_hints, examples


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _stopped_run() -> dict[str, object]:
    return {
        "status": "stopped",
        "counts": {
            "rows_in": 198,
            "rows_sent": 92,
            "rows_redundant": 97,
            "rows_dropped": 3,
            "rows_quarantined": 6,
            "rows_not_a_user": 1,
            "rows_not_migrated": 5,
            "users_not_migrated": 5,
            "user_flows_not_migrated": 5,
            "requests_planned": 92,
            "users": 20,
        },
        "accounting_closes": True,
        "outcomes": {"sent": 5},
        "users_sent": 5,
        "users_matching": 0,
        "users_differing": 0,
        "users_not_reached": 20,
        "attempts": [{"attempt": 1}],
    }


def test_a_stopped_run_says_planned_sent_and_not_sent_and_they_add_up() -> None:
    run = _stopped_run()
    assert request_counts(run) == [("sent", 5), ("not_sent", 87)]
    assert requests_line(run) == "92 requests planned = 5 sent + 87 not sent"
    md = render(run)
    assert (
        "198 rows in = 92 planned as requests + 97 redundant + 3 not onboarding state + 1 not a user + "
        "5 progress not migrated (closes)"
    ) in md
    assert "| requests sent and accepted | 5 |" in md
    assert "| requests not sent (the run stopped first) | 87 |" in md
    # nothing here says rows or requests were "sent" beyond the 5 that were
    assert "92 sent" not in md
    assert reconciliation_line(run) == (
        "reconciliation: 0 of 20 users match what was migrated; 20 unfinished when the run stopped (resume to "
        "finish them); 5 user-flows of 5 users have progress that was not (see quarantine.parquet)"
    )


def test_no_restart_no_restart_row_and_unknown_outcomes_still_add_up() -> None:
    run = _stopped_run() | {"status": "succeeded", "outcomes": {"sent": 89, "already_in_effect": 2, "deferred": 1}}
    rows = dict(summary_rows(run))
    assert not any("restart" in k or "read-back" in k for k in rows)
    assert rows["requests not sent: already in effect on the server"] == 2
    assert rows["requests deferred"] == 1
    assert requests_line(run) == "92 requests planned = 89 sent + 2 already in effect + 1 deferred"


def test_rate_estimate_never_counts_the_first_instant_burst_and_holds_still_between_estimates() -> None:
    clock = Clock()
    est = RateEstimate(window=20.0, clock=clock)
    etas: list[float] = []
    # a limiter at 20/s lets one go at once, then one every 50 ms
    for i in range(400):
        clock.now = i * 0.05
        est.add()
        if est.rate is not None:
            assert est.rate <= 20.0 + 1e-9
            eta = est.eta(400 - i - 1)
            assert eta is not None
            etas.append(eta)
    assert est.rate is not None
    assert abs(est.rate - 20.0) < 1e-6
    # at a steady rate the ETA only ever counts down, by about the time that passed
    steps = [a - b for a, b in itertools.pairwise(etas)]
    assert all(-1e-6 <= s <= 1.1 for s in steps)


def _outcome(user: str, seq: int) -> Outcome:
    return Outcome(f"{user}|f|{seq}", user, "f", seq, 201, 1, True, None, None, "sent", 0.0)


def test_progress_counts_a_user_done_when_their_last_request_has_an_outcome() -> None:
    clock = Clock()
    buf = io.StringIO()
    console = Console(file=buf, width=200, force_terminal=False)
    with PushProgress(total=3, rate=20, user_requests={"a": 2, "b": 1}, console=console, clock=clock) as p:
        p.advance(_outcome("a", 0))
        assert (p.users_done, p.users_total) == (0, 2)
        clock.now = 1.0
        p.advance(_outcome("b", 0))
        assert p.users_done == 1
        clock.now = 2.0
        p.advance(_outcome("a", 1))
        assert p.users_done == 2
    text = buf.getvalue()
    assert "requests answered per second over the last 20 s" in text
    assert "3/3 req  2/2 users  0:02" in text


def test_the_bar_builds_its_line_when_drawn_and_ends_on_the_exact_count() -> None:
    clock = Clock()
    buf = io.StringIO()
    console = Console(file=buf, width=200, force_terminal=False)
    users = {f"u{i}": 1 for i in range(50)}
    with PushProgress(total=50, rate=1000, user_requests=users, console=console, clock=clock) as p:
        for i in range(50):
            clock.now = i * 0.01
            p.advance(_outcome(f"u{i}", 0))
        # an answer only counts: rich is not told of it, the line is built when the bar is drawn
        assert p._progress.tasks[0].completed == 0
    assert "50/50 req  50/50 users" in buf.getvalue()


def test_a_sharded_plans_bar_names_each_step_and_goes_when_done() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=200, force_terminal=True)
    seen = []
    with PlanProgress(3, console=console) as bar:
        seen.append(bar._progress.tasks[0].description)
        bar.split_done()
        for k in range(3):
            seen.append(bar._progress.tasks[0].description)
            bar._progress.refresh()
            bar.shard_done(k)
        assert bar._progress.tasks[0].completed == bar._progress.tasks[0].total == 4
    assert seen == [
        "splitting the export into 3 shards",
        "shard 1 of 3: analysing and planning",
        "shard 2 of 3: analysing and planning",
        "shard 3 of 3: analysing and planning",
    ]
    assert "shard 3 of 3" in buf.getvalue()  # drawn on a terminal
    off = io.StringIO()
    with PlanProgress(2, console=Console(file=off, force_terminal=False)) as bar:
        bar.split_done()
        bar.shard_done(0)
        bar.shard_done(1)
    assert off.getvalue() == ""  # nothing off a terminal: logs and captured output stay clean


def _quarantine() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "source_file": ["a.csv"] * 5 + ["b.csv"],
            "source_row": [9, 2, 4, 7, 8, 1],
            "reason": [
                "unknown flow 'X' (not in the catalog)",
                "unknown flow 'X' (not in the catalog)",
                "unknown flow 'X' (not in the catalog)",
                "unknown step 's9' in flow 'f'",
                "unknown flow 'Y' (not in the catalog)",
                "unknown flow 'X' (not in the catalog)",
            ],
            "flow_slug": ["X", "X", "X", "f", "Y", "X"],
            "step_id": [None, None, None, "s9", None, None],
        }
    )


def test_quarantine_examples_name_the_first_rows_of_each_reason_in_file_order() -> None:
    ex = examples(_quarantine(), per_reason=3)
    assert list(ex) == [
        "unknown flow 'X' (not in the catalog)",
        "unknown flow 'Y' (not in the catalog)",
        "unknown step 's9' in flow 'f'",
    ]
    assert ex["unknown flow 'X' (not in the catalog)"] == ["a.csv:2", "a.csv:4", "a.csv:9"]


def test_catalog_hints_show_unmatched_ids_beside_the_catalogs_and_the_key_that_maps_them() -> None:
    hints = catalog_hints(_quarantine(), {"f": ["s1", "s2"], "g": ["t1"]})
    assert len(hints) == 2
    assert "5 rows name 2 flows the catalog does not have: 'X' (4 rows), 'Y' (1 row)" in hints[0]
    assert "the catalog's flows are f, g" in hints[0]
    assert "flow_map: {X:" in hints[0]
    assert "flow 'f': 1 row names a step it does not have: 's9' (1 row); its steps are s1, s2" in hints[1]
    assert "step_map: {f: {s9:" in hints[1]


def test_inspect_says_a_preset_fits_only_with_what_the_catalog_lacks_beside_it() -> None:
    from cli.inspect import main
    from tests.e2e.servers import ROOT

    data = ROOT / "data"

    def inspect(catalog: Path) -> str:
        buf = io.StringIO()
        code = main(
            str(data / "appcues" / "appcues-events.csv"),
            preset="appcues",
            mapping=None,
            catalog=str(catalog),
            rows=1000,
            console=Console(file=buf, width=400),
        )
        assert code == 0
        return buf.getvalue()

    # a catalog of other slugs than the Appcues ids the export names
    unmapped = inspect(data / "catalog.yaml")
    assert "do not all match the catalog" in unmapped
    assert "flows the catalog does not have: '-2jp9ahpxzzk96vb58v5' (49 rows)" in unmapped
    assert "the catalog's flows are flow_announcement, flow_onboarding, flow_welcome_tour" in unmapped
    assert "flow_map:" in unmapped
    # the catalog keyed by the Appcues ids: only the sample's one row for a flow deleted since is unknown
    mapped = inspect(data / "appcues" / "catalog.yaml")
    assert "1 row names 1 flow the catalog does not have: '-OldFlow1234' (1 row)" in mapped


def test_an_audit_funnel_draws_every_step_on_one_scale() -> None:
    from lifecycle.audit import Audit, render_markdown

    steps = pl.DataFrame(
        {
            "flow_slug": ["f", "f"],
            "step_index": [0, 1],
            "step_id": ["one", "two"],
            "completed_a": [4, 2],
            "completed_b": [4, 1],
        }
    )
    flows = pl.DataFrame(
        {"flow_slug": ["f"], **{f"{k}_{s}": [1] for k in ("started", "completed", "skipped") for s in "ab"}}
    )
    md = render_markdown(
        Audit(pl.DataFrame(), pl.DataFrame(), steps, flows, {"a": "A", "b": "B"}, *[pl.DataFrame()] * 2)
    )
    bars = {line.split()[0] + line.split()[1]: line.count("█") for line in md.splitlines() if "█" in line}
    # step two's 2 users draw half as long as step one's 4, not as long (one scale per funnel)
    assert bars["oneA"] == 2 * bars["twoA"] == 30
    assert bars["twoB"] == round(30 / 4)


def test_report_puts_the_summary_table_first_and_charts_counts() -> None:
    run = {
        "run_id": "r",
        "status": "succeeded",
        "counts": {"rows_in": 3, "rows_sent": 1, "rows_redundant": 1, "rows_dropped": 0, "rows_quarantined": 1},
        "accounting_closes": True,
        "requests_by_action": {"COMPLETED_STEP": 4, "COMPLETED_FLOW": 1},
    }
    md = render(
        run, per_flow=[{"flow_slug": "f", "users": 2, "requests": 5, "started": 2, "completed": 1, "skipped": 0}]
    )
    assert md.index("| status | succeeded |") < md.index("## Per flow")
    # a record without the split of quarantined rows (an earlier version's) counts them all as not migrated
    assert (
        "3 rows in = 1 planned as requests + 1 redundant + 0 not onboarding state + 0 not a user + "
        "1 progress not migrated (closes)"
    ) in md
    lines = bar_chart([("x", 4), ("y", 1)], width=8)
    assert lines == ["x ████████ 4", "y ██······ 1"]


def test_the_line_shows_requests_in_flight_and_their_median_latency() -> None:
    clock = Clock()
    buf = io.StringIO()
    console = Console(file=buf, width=250, force_terminal=False)
    seen = [(0, float("nan"))]
    with PushProgress(
        total=2, rate=500, user_requests={"a": 2}, console=console, clock=clock, flight=lambda: seen[0]
    ) as p:
        assert "0 in flight, p50 - ms" in p._line()
        seen[0] = (37, 0.1534)
        p.advance(_outcome("a", 0))
        assert "(limit 500)  37 in flight, p50 153 ms  ETA" in p._line()
        p.advance(_outcome("a", 1))
    assert "requests in flight and their median latency" in buf.getvalue()


def _clean_run(**counts: int) -> dict[str, Any]:
    base = {"rows_in": 3, "rows_sent": 3, "rows_redundant": 0, "rows_dropped": 0, "rows_quarantined": 0}
    base |= {"rows_not_a_user": 0, "rows_not_migrated": 0, "users": 3}
    return {"status": "succeeded", "counts": base | counts, "users_matching": 3, "users_differing": 0}


def test_the_verdict_counts_lost_user_flows_not_rows() -> None:
    # a wide row counted as planned for one column though another column was lost: no row is "not
    # migrated", yet two users' progress was
    run = _clean_run(rows_partly_not_migrated=2, users_not_migrated=2, user_flows_not_migrated=2)
    assert any_progress_lost(run["counts"])
    assert progress_lost(run)
    assert reconciliation_line(run) == (
        "reconciliation: 3 of 3 users match what was migrated; "
        "2 user-flows of 2 users have progress that was not (see quarantine.parquet)"
    )
    assert ("rows with some progress not migrated (counted above as planned or redundant)", 2) in summary_rows(run)
    accepted = run | {"settings": {"max_quarantined": "5"}}
    assert any_progress_lost(run["counts"])
    assert not progress_lost(accepted)
    assert reconciliation_line(accepted).endswith("have progress that was not (accepted: --max-quarantined 5)")
    clean = _clean_run(users_not_migrated=0, user_flows_not_migrated=0)
    assert not progress_lost(clean)
    assert reconciliation_line(clean) == "reconciliation: 3 of 3 users match the export exactly"
    assert not any(label.startswith("rows with some progress") for label, _ in summary_rows(clean))
    one = _clean_run(rows_partly_not_migrated=1, users_not_migrated=1, user_flows_not_migrated=1)
    assert reconciliation_line(one).endswith(
        "; 1 user-flow of 1 user has progress that was not (see quarantine.parquet)"
    )
    # a record of an earlier version, without the user-flows, is judged by its rows
    assert progress_lost(_clean_run(rows_not_migrated=1))
    assert not progress_lost(_clean_run())


def test_a_merge_against_state_in_frigade_says_what_it_matched() -> None:
    ex = {"policy": "merge", "users_read": 3, "users_with_state": 2, "user_flows_with_state": 2}
    line = reconciliation_line(_clean_run(user_flows_not_migrated=0) | {"existing_state": ex})
    assert line == "reconciliation: 3 of 3 users match the export merged with the state they had in Frigade"
    assert re.search(r"reconciliation: [0-9]+ of [0-9]+ users match", line)
    # nobody had state: the export itself is what was matched
    none_had = reconciliation_line(_clean_run() | {"existing_state": ex | {"users_with_state": 0}})
    assert none_had.endswith("match the export exactly")
