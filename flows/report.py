"""report.md: what a person reads after a run. Summary table first, then the details, with a text
chart (it renders in a terminal, in Prefect's markdown artifact and in any markdown viewer offline)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

BAR_WIDTH = 30


def bar_chart(rows: Sequence[tuple[str, int]], width: int = BAR_WIDTH) -> list[str]:
    top = max((v for _, v in rows), default=0)
    label_w = max((len(k) for k, _ in rows), default=0)
    out = []
    for label, value in rows:
        n = round(width * value / top) if top else 0
        out.append(f"{label.ljust(label_w)} {'█' * n}{'·' * (width - n)} {value}")
    return out


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return lines


def summary_rows(run: Mapping[str, Any]) -> list[tuple[str, Any]]:
    c = run.get("counts", {})
    o = run.get("outcomes", {})
    return [
        ("status", run.get("status")),
        ("mode", run.get("settings", {}).get("mode")),
        ("rows in", c.get("rows_in")),
        ("rows turned into requests", c.get("rows_sent")),
        ("rows redundant (implied or duplicate)", c.get("rows_redundant")),
        ("rows dropped (non-state events)", c.get("rows_dropped")),
        ("rows quarantined", c.get("rows_quarantined")),
        ("duplicate events", c.get("events_duplicate")),
        ("users unchanged since the last sync (not planned)", c.get("users_unchanged", 0)),
        ("requests planned", c.get("requests_planned")),
        ("requests sent", o.get("sent", 0)),
        ("found applied after a restart", o.get("resolved_applied", 0)),
        ("requests rejected", o.get("rejected", 0)),
        ("requests held (after a rejection)", o.get("held", 0)),
        ("requests failed", o.get("failed", 0)),
        ("distinct users touched (MAU)", c.get("users")),
        ("users with failures", run.get("failed_users", 0)),
        ("reconciliation mismatches", run.get("mismatches", 0)),
        ("attempts", len(run.get("attempts", []))),
    ]


def render(
    run: Mapping[str, Any],
    *,
    per_flow: Sequence[Mapping[str, Any]] = (),
    mismatch_sample: Sequence[Mapping[str, Any]] = (),
) -> str:
    c = run.get("counts", {})
    lines = [f"# frigade-migrate {run.get('kind', 'backfill')} {run.get('run_id', '')}", ""]
    lines += _table(["", "value"], summary_rows(run))
    closes = run.get("accounting_closes")
    lines += [
        "",
        "**Row accounting**: "
        f"{c.get('rows_in')} in = {c.get('rows_sent')} sent + {c.get('rows_redundant')} redundant + "
        f"{c.get('rows_dropped')} dropped + {c.get('rows_quarantined')} quarantined "
        f"({'closes' if closes else 'DOES NOT CLOSE'})",
    ]
    twins = c.get("user_ids_differing_by_whitespace", 0)
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
    for title, key in (
        ("Quarantine reasons", "quarantine_reasons"),
        ("Dropped non-state events", "dropped_events"),
        ("Failures", "failure_reasons"),
    ):
        items = run.get(key, {})
        if items:
            lines += ["", f"## {title}", ""]
            lines += _table(["reason", "rows"], sorted(items.items(), key=lambda kv: -kv[1])[:20])
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
