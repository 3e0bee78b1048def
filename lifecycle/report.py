"""report.md: what a person reads after a run. Summary table first, then the details, with a text
chart (it renders in a terminal, in Prefect's markdown artifact and in any markdown viewer offline)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transforms.accounting import NOT_MIGRATED, is_not_a_user
from transforms.quarantine import counted

BAR_WIDTH = 30


def bar_chart(rows: Sequence[tuple[str, int]], width: int = BAR_WIDTH, top: int | None = None) -> list[str]:
    """One bar per row, scaled to ``top`` (default: the largest value), so that charts drawn in
    parts can share one scale."""
    top = max((v for _, v in rows), default=0) if top is None else top
    label_w = max((len(k) for k, _ in rows), default=0)
    out = []
    for label, value in rows:
        n = round(width * value / top) if top else 0
        out.append(f"{label.ljust(label_w)} {'█' * n}{'·' * (width - n)} {value}")
    return out


def _cell(value: Any) -> str:
    """A whole value in one cell (a viewer wraps it): its pipes escaped, its line breaks as spaces."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return lines


# ---------------------------------------------------------------- rows not sent, and what was lost


def rows_not_sent(counts: Mapping[str, Any]) -> tuple[int, int]:
    """(rows of no user to migrate, rows of progress not migrated); a record of an earlier version,
    without the split, counts every quarantined row as not migrated."""
    if "rows_not_migrated" in counts:
        return int(counts.get("rows_not_a_user") or 0), int(counts.get("rows_not_migrated") or 0)
    return 0, int(counts.get("rows_quarantined") or 0)


def loss_accepted_by(run: Mapping[str, Any]) -> str | None:
    """The option by which the user accepted progress not migrated, if they did."""
    spec = (run.get("settings") or {}).get("max_quarantined")
    return None if spec is None else f"--max-quarantined {spec}"


def any_progress_lost(counts: Mapping[str, Any]) -> bool:
    """Whether any known user's progress was not migrated, counted by event (user-flows): a row of
    several events (a wide or state table's) counts as planned when one of them was, though another
    was lost. A record of an earlier version, without the user-flows, counts by row."""
    if "user_flows_not_migrated" in counts:
        return int(counts.get("user_flows_not_migrated") or 0) > 0
    return rows_not_sent(counts)[1] > 0


def progress_lost(run: Mapping[str, Any]) -> bool:
    """Whether known users' progress was left behind without the user accepting it: the run then
    fails (exit 1), whatever the reconciliation of what was sent says."""
    return any_progress_lost(run.get("counts") or {}) and loss_accepted_by(run) is None


def lost_reasons(run: Mapping[str, Any]) -> list[tuple[str, int]]:
    """The quarantine reasons that are loss (not those of rows naming no user), most frequent first."""
    reasons = (run.get("quarantine_reasons") or {}).items()
    return sorted(((r, int(n)) for r, n in reasons if not is_not_a_user(r)), key=lambda kv: (-kv[1], kv[0]))


def _lost_user_flows(run: Mapping[str, Any]) -> str:
    c = run.get("counts") or {}
    flows, users = c.get("user_flows_not_migrated", 0), c.get("users_not_migrated", 0)
    return f"{counted(flows, 'user-flow')} of {counted(users, 'user')}"


def loss_line(run: Mapping[str, Any], rows_at: str = "quarantine.parquet") -> str | None:
    """The run's last line when it lost progress the user did not accept: how much, the top reason,
    where the rows are and what to do; None otherwise."""
    if not progress_lost(run):
        return None
    # the quarantined events that are loss: also those of rows counted as planned for another event
    rows = max(rows_not_sent(run.get("counts") or {})[1], sum(n for _, n in lost_reasons(run)))
    top = lost_reasons(run)[:1]
    first = (run.get("quarantine_examples") or {}).get(top[0][0], []) if top else []
    why = ""
    if top:
        reason, n = top[0]
        why = f", most as {reason!r} ({counted(n, 'row')}" + (f", first at {', '.join(first)})" if first else ")")
    return (
        f"progress not migrated: {_lost_user_flows(run)} ({counted(rows, 'row')}{why}); the rows are in {rows_at} "
        f"(kind = {NOT_MIGRATED}). Map them (flow_map / step_map; DROP excludes a flow or event), "
        "or accept the loss with --max-quarantined"
    )


#: how a request's outcome reads in a report, in the order it is listed
OUTCOME_LABELS = {
    "sent": "requests sent and accepted",
    "already_in_effect": "requests not sent: already in effect on the server",
    "resolved_applied": "requests found already applied on read-back (not resent)",
    "rejected": "requests rejected (400)",
    "held": "requests held (after a rejection of the same flow)",
    "failed": "requests failed (retries used up)",
    "held_unpredicted": "requests held: the server's state was not the one the rules predict",
    "held_replan": "requests not sent: planned again from progress made outside this run",
}


def request_counts(run: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(outcome, requests) for every planned request: each outcome recorded, then those with none
    yet (a stopped run's unsent requests). They add up to the requests planned."""
    o = {str(k): int(v) for k, v in run.get("outcomes", {}).items()}
    planned = int(run.get("counts", {}).get("requests_planned") or 0)
    known = [k for k in OUTCOME_LABELS if k in o or k == "sent"]
    rows = [(k, o.get(k, 0)) for k in known] + sorted((k, v) for k, v in o.items() if k not in OUTCOME_LABELS)
    return [*rows, ("not_sent", planned - sum(o.values()))]


def existing_state_rows(run: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """What the run found in Frigade before planning, and what its policy did with it."""
    ex = run.get("existing_state")
    if not ex:
        return []
    read = f"{ex.get('users_read', 0)} users read before planning (every user of the export)"
    policy = ex.get("policy")
    did = (
        f"{ex.get('user_flows_kept', 0)} kept as they are, {ex.get('user_flows_merged', 0)} merged"
        if policy == "merge"
        else f"{ex.get('user_flows_overwritten', 0)} set to the export"
    )
    if not ex.get("users_with_state"):
        return [("state read from Frigade", read + ", none had state")]
    return [
        ("state read from Frigade", read),
        (f"users with state in Frigade (policy {policy})", ex.get("users_with_state", 0)),
        ("their user-flows in the export", f"{ex.get('user_flows_with_state', 0)}: {did}"),
        ("users whose flows both sides changed (Frigade's progress kept)", ex.get("users_with_conflicts", 0)),
    ]


def summary_rows(run: Mapping[str, Any]) -> list[tuple[str, Any]]:
    c = run.get("counts", {})
    rows: list[tuple[str, Any]] = [
        ("status", run.get("status")),
        ("mode", run.get("settings", {}).get("mode")),
        *([("shards (users split by a hash of their id)", run["shards"])] if run.get("shards") else []),
        ("rows in", c.get("rows_in")),
        ("rows planned as requests", c.get("rows_sent")),
        ("rows redundant (implied or duplicate)", c.get("rows_redundant")),
        ("rows not onboarding state (other events, dropped)", c.get("rows_dropped")),
        ("rows not a user to migrate (anonymous or no user id)", rows_not_sent(c)[0]),
        ("rows of progress not migrated (quarantined)", rows_not_sent(c)[1]),
    ]
    if c.get("rows_partly_not_migrated"):
        rows.append(
            (
                "rows with some progress not migrated (counted above as planned or redundant)",
                c["rows_partly_not_migrated"],
            )
        )
    if any_progress_lost(c):
        accepted = loss_accepted_by(run)
        label = "users with progress not migrated" + (f" (accepted: {accepted})" if accepted else "")
        rows.append((label, _lost_user_flows(run)))
    rows.append(("duplicate events", c.get("events_duplicate")))
    if c.get("users_unchanged"):
        rows.append(("users unchanged since the last sync (not planned)", c["users_unchanged"]))
    rows.append(("requests planned", c.get("requests_planned")))
    rows += existing_state_rows(run)
    rows.append(("rules profile", run.get("rules", {}).get("name")))
    for kind, n in request_counts(run):
        if kind == "not_sent":
            if n:
                rows.append(("requests not sent (the run stopped first)", n))
        elif n or kind == "sent":
            rows.append((OUTCOME_LABELS.get(kind, f"requests {kind.replace('_', ' ')}"), n))
    rows += [
        ("distinct users planned (each counts toward MAU once sent)", c.get("users")),
        ("distinct users sent to", run.get("users_sent", 0)),
        ("users with failures", run.get("failed_users", 0)),
        ("users matching the export", run.get("users_matching", 0)),
        ("users differing from the export", run.get("users_differing", 0)),
    ]
    if run.get("users_not_reached"):
        rows.append(("users unfinished (the run stopped first)", run["users_not_reached"]))
    # a stop leaves unfinished users short of their target: their fields count here too, and say so
    label = "reconciliation mismatches (fields" + (
        "; unfinished users' included)" if run.get("users_not_reached") else ")"
    )
    rows.append((label, run.get("mismatches", 0)))
    hidden = run.get("targeting", {}).get("hidden_by_targeting")
    if hidden:
        rows.append(("user-flows hidden by targeting (visible is not compared)", hidden))
    rows.append(("attempts", len(run.get("attempts", []))))
    return rows


def accounting_line(run: Mapping[str, Any]) -> str:
    """Rows in = rows planned + redundant + not onboarding state + not a user + progress not migrated:
    where every input row went (the last two are the quarantined rows)."""
    c = run.get("counts", {})
    closes = "closes" if run.get("accounting_closes") else "DOES NOT CLOSE"
    not_a_user, not_migrated = rows_not_sent(c)
    return (
        f"{c.get('rows_in')} rows in = {c.get('rows_sent')} planned as requests + {c.get('rows_redundant')} "
        f"redundant + {c.get('rows_dropped')} not onboarding state + {not_a_user} not a user + "
        f"{not_migrated} progress not migrated ({closes})"
    )


def requests_line(run: Mapping[str, Any]) -> str:
    """Requests planned = the sum of their outcomes, each named."""
    parts = [f"{n} {kind.replace('_', ' ')}" for kind, n in request_counts(run) if n or kind == "sent"]
    return f"{run.get('counts', {}).get('requests_planned')} requests planned = " + " + ".join(parts)


def reconciliation_line(run: Mapping[str, Any]) -> str:
    """How many of the users planned Frigade now holds as the export says, and what it compared:
    the export itself only when no known user's progress was left out of the plan."""
    users = int(run.get("counts", {}).get("users") or 0)
    match, differ = int(run.get("users_matching") or 0), int(run.get("users_differing") or 0)
    unreached = int(run.get("users_not_reached") or 0)
    lost = any_progress_lost(run.get("counts") or {})
    if not differ and not unreached and not lost:
        # with the merge policy the target was the export merged with the state Frigade held
        ex = run.get("existing_state") or {}
        merged = bool(ex.get("users_with_state")) and ex.get("policy") == "merge"
        against = "the export merged with the state they had in Frigade" if merged else "the export exactly"
        return f"reconciliation: {match} of {users} users match {against}"
    parts = [f"reconciliation: {match} of {users} users match" + (" what was migrated" if lost else "")]
    if differ:
        parts.append(f"{differ} differ (see reconcile.parquet)")
    if unreached:
        parts.append(f"{unreached} unfinished when the run stopped (resume to finish them)")
    if lost:
        accepted = loss_accepted_by(run)
        parts.append(
            f"{_lost_user_flows(run)} "
            + ("has" if (run.get("counts") or {}).get("user_flows_not_migrated", 0) == 1 else "have")
            + " progress that was not "
            + (f"(accepted: {accepted})" if accepted else "(see quarantine.parquet)")
        )
    return "; ".join(parts)


def render(
    run: Mapping[str, Any],
    *,
    per_flow: Sequence[Mapping[str, Any]] = (),
    mismatch_sample: Sequence[Mapping[str, Any]] = (),
) -> str:
    lines = [f"# frigade-migrate {run.get('kind', 'backfill')} {run.get('run_id', '')}", ""]
    lines += _table(["", "value"], summary_rows(run))
    lines += [
        "",
        f"**Row accounting**: {accounting_line(run)}",
        "",
        f"**Requests**: {requests_line(run)}",
        "",
        f"**Reconciliation**: {reconciliation_line(run).removeprefix('reconciliation: ')}",
    ]
    twins = run.get("counts", {}).get("user_ids_differing_by_whitespace", 0)
    if twins:
        lines += [
            "",
            f"**Warning**: {twins} user ids differ from another only by leading or trailing whitespace; they "
            "were sent as different users (ids are used as written). If the export pads its ids, set "
            "`trim_user_ids: true` in the mapping.",
        ]
    if per_flow:
        lines += ["", "## Per flow", ""]
        lines += _table(
            ["flow", "users", "requests", "started", "completed", "skipped"],
            [[f["flow_slug"], f["users"], f["requests"], f["started"], f["completed"], f["skipped"]] for f in per_flow],
        )
        lines += ["", "Users who completed each flow:", "", "```"]
        lines += bar_chart([(str(f["flow_slug"]), int(f["completed"])) for f in per_flow])
        lines += ["```"]
    actions = run.get("requests_by_action", {})
    if actions:
        lines += ["", "## Requests by action", "", "```"]
        lines += bar_chart(sorted(actions.items(), key=lambda kv: -kv[1]))
        lines += ["```"]
    if run.get("conflict_users"):
        lines += ["", "## Changed both in the export and in Frigade", ""]
        lines += [
            "Frigade has progress the export lacks (its own, or the export reset it): kept, with the export's "
            "(a flag true on either side stays true, the pointer at the further step). "
            "First users (all of them in conflicts.parquet): " + ", ".join(run["conflict_users"]),
        ]
    hints = run.get("catalog_hints", [])
    if hints:
        lines += ["", "## What the catalog does not know", ""]
        lines += [f"- {h}" for h in hints]
    reasons = run.get("quarantine_reasons", {})
    where = run.get("quarantine_examples", {})
    lost = lost_reasons(run)
    no_user = sorted(((r, n) for r, n in reasons.items() if is_not_a_user(r)), key=lambda kv: -kv[1])
    for title, items in (
        ("Progress not migrated (quarantine.parquet, kind = not_migrated)", lost),
        ("Not a user to migrate (quarantine.parquet, kind = not_a_user)", no_user),
    ):
        if items:
            lines += ["", f"## {title}", ""]
            lines += _table(
                ["reason", "events", "first rows (file:row, 1 = the first data row)"],
                [(r, n, ", ".join(where.get(r, []))) for r, n in items[:20]],
            )
    for title, key, unit in (
        ("Not onboarding state (events dropped, by name)", "dropped_events", "rows"),
        ("Failures", "failure_reasons", "requests"),
    ):
        items = run.get(key, {})
        if items:
            lines += ["", f"## {title}", ""]
            lines += _table(["reason", unit], sorted(items.items(), key=lambda kv: -kv[1])[:20])
    if mismatch_sample:
        lines += ["", "## Reconciliation mismatches (first 20)", ""]
        lines += _table(
            ["user", "flow", "step", "field", "expected", "actual"],
            [
                [m["user_id"], m["flow_slug"], m["step_id"] or "", m["field"], m["expected"], m["actual"]]
                for m in mismatch_sample[:20]
            ],
        )
    attempts = run.get("attempts", [])
    if len(attempts) > 1:
        lines += ["", "## Attempts", ""]
        lines += _table(
            ["attempt", "started", "requests sent", "stopped by"],
            [[a.get("attempt"), a.get("started_at"), a.get("sent", 0), a.get("stopped_by") or ""] for a in attempts],
        )
    if run.get("stop_message"):
        lines += ["", f"**Stopped**: {run['stop_message']}"]
    return "\n".join(lines) + "\n"
