"""`frigade-migrate audit A B`: files and rendering around transforms.audit.

Writes audit.parquet (every change), regressions.csv (who went backwards: user, flow, step, field),
audit.md (summary table first) and audit.html, a page a person opens offline: per flow, the moves
between statuses with the moves back marked, the users who regressed, and a funnel of users with each
step completed in A vs B, as inline SVG."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console

from lifecycle.exitcodes import ExitCode
from lifecycle.report import bar_chart
from lifecycle.runfolder import RunFolder
from lifecycle.statedir import KNOWN_SNAPSHOT
from transforms.audit import counts_by_flow_and_field, diff, flow_funnel, funnel, regressions, transitions
from transforms.schema import InputError
from transforms.snapshot import SNAPSHOT_SCHEMA

BAR_H, GAP, CHART_W, LABEL_W = 14, 8, 360, 170
#: regressing changes listed in audit.md and audit.html (regressions.csv has them all)
LISTED = 200
REGRESSIONS_FILE = "regressions.csv"


def load_side(path: str) -> tuple[pl.DataFrame, str]:
    """(state, what it covers). A run folder that remembered its state gives the full state known
    after that run (its own snapshot over everything remembered before); otherwise the snapshot holds
    only the users that run planned, and the audit says so."""
    p = Path(path)
    if p.is_dir():
        if (p / KNOWN_SNAPSHOT).exists():
            return _read_snapshot(p / KNOWN_SNAPSHOT), "full state known after the run"
        p = p / "snapshot.parquet"
    if not p.exists():
        raise InputError("no snapshot here (give a snapshot.parquet or a run folder)", file=str(p))
    return _read_snapshot(p), "only the users this run planned"


def _read_snapshot(p: Path) -> pl.DataFrame:
    """A snapshot a run wrote, or an input error saying this file is not one."""
    what = "is not a snapshot (give a run folder, or the snapshot.parquet a run wrote)"
    try:
        frame = pl.read_parquet(p)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"{what}: {str(exc).splitlines()[0]}", file=str(p)) from exc
    missing = [c for c in SNAPSHOT_SCHEMA if c not in frame.columns]
    if missing:
        raise InputError(f"{what}: it has no column {', '.join(missing[:3])}", file=str(p))
    return frame


def load_snapshot(path: str) -> pl.DataFrame:
    return load_side(path)[0]


@dataclass
class Audit:
    changes: pl.DataFrame
    per_field: pl.DataFrame
    steps: pl.DataFrame
    flows: pl.DataFrame
    summary: dict[str, Any]
    #: per flow, the user-flows that moved between statuses (``transforms.audit.transitions``)
    moves: pl.DataFrame
    #: every regressing change, by user
    regressed: pl.DataFrame


def audit(a_path: str, b_path: str) -> Audit:
    (a, covers_a), (b, covers_b) = load_side(a_path), load_side(b_path)
    changes = diff(a, b)
    regressed = regressions(changes)
    users_a, users_b = set(a["user_id"].unique().to_list()), set(b["user_id"].unique().to_list())
    summary = {
        "a": a_path,
        "b": b_path,
        "a_covers": f"{len(users_a)} users ({covers_a})",
        "b_covers": f"{len(users_b)} users ({covers_b})",
        "users_only_in_a": len(users_a - users_b),
        "users_only_in_b": len(users_b - users_a),
        "users_changed": changes.filter(pl.col("field") != "user")["user_id"].n_unique(),
        "field_changes": changes.filter(pl.col("field") != "user").height,
        "users_with_a_regression": regressed["user_id"].n_unique(),
    }
    return Audit(
        changes,
        counts_by_flow_and_field(changes),
        funnel(a, b),
        flow_funnel(a, b),
        summary,
        transitions(a, b),
        regressed,
    )


def _moved(r: dict[str, Any]) -> str:
    return f"{r['before']} -> {r['after']}" + (" (back)" if r["regression"] else "")


def _field(r: dict[str, Any]) -> str:
    return f"{r['step_id']}: {r['field']}" if r["step_id"] else str(r["field"])


def render_markdown(result: Audit) -> str:
    summary, per_field, steps, flows = result.summary, result.per_field, result.steps, result.flows
    lines = [f"# State audit: {summary['a']} -> {summary['b']}", "", "| | value |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {v} |" for k, v in summary.items() if k not in ("a", "b")]
    if result.moves.height:
        lines += ["", "## Moves between statuses, per flow (user-flows; back = progress lost)", ""]
        lines += ["| flow | from -> to | user-flows |", "|---|---|---|"]
        lines += [f"| {r['flow_slug']} | {_moved(r)} | {r['user_flows']} |" for r in result.moves.to_dicts()]
    if result.regressed.height:
        shown = result.regressed.head(LISTED)
        lines += ["", f"## Users who regressed ({REGRESSIONS_FILE} lists every change)", ""]
        lines += ["| user | flow | field | before -> after |", "|---|---|---|---|"]
        lines += [
            f"| {r['user_id']} | {r['flow_slug']} | {_field(r)} | {r['before']} -> {r['after']} |"
            for r in shown.to_dicts()
        ]
        if result.regressed.height > LISTED:
            lines += ["", f"... and {result.regressed.height - LISTED} more in {REGRESSIONS_FILE}"]
    if per_field.height:
        lines += ["", "## Changes per flow and field", "", "| flow | field | changes | users |", "|---|---|---|---|"]
        lines += [f"| {r['flow_slug']} | {r['field']} | {r['changes']} | {r['users']} |" for r in per_field.to_dicts()]
    if flows.height:
        lines += ["", "## Flows: users started / completed / skipped (A -> B)", ""]
        lines += ["| flow | started | completed | skipped |", "|---|---|---|---|"]
        lines += [
            f"| {r['flow_slug']} | "
            + " | ".join(f"{r[f + '_a']} -> {r[f + '_b']}" for f in ("started", "completed", "skipped"))
            + " |"
            for r in flows.to_dicts()
        ]
    for (flow,), part in steps.group_by("flow_slug", maintain_order=True):
        lines += ["", f"## {flow}: users with each step completed (A / B)", "", "```"]
        # one scale for the whole funnel, so that a step's bar is comparable with the step before it
        top = max([0, *part["completed_a"].to_list(), *part["completed_b"].to_list()])
        for r in part.to_dicts():
            pair = [(f"{r['step_id']} A", r["completed_a"]), (f"{r['step_id']} B", r["completed_b"])]
            lines += bar_chart(pair, top=top)
        lines += ["```"]
    return "\n".join(lines) + "\n"


def _flow_table(flows: pl.DataFrame) -> str:
    """Flow-level counts A -> B, each cell carrying its numbers (a lost ``completed`` shows here even
    where the step funnels stay the same)."""
    head = "<tr><th>flow</th><th>started</th><th>completed</th><th>skipped</th></tr>"
    body = "".join(
        f"<tr><th>{html.escape(str(r['flow_slug']))}</th>"
        + "".join(
            f'<td class="flowcount" data-flow="{html.escape(str(r["flow_slug"]))}" data-field="{f}" '
            f'data-a="{r[f + "_a"]}" data-b="{r[f + "_b"]}"'
            + (' style="color:#b91c1c;font-weight:bold"' if r[f + "_b"] < r[f + "_a"] else "")
            + f">{r[f + '_a']} &rarr; {r[f + '_b']}</td>"
            for f in ("started", "completed", "skipped")
        )
        + "</tr>"
        for r in flows.to_dicts()
    )
    return f"<h2>Flows: users started / completed / skipped, A &rarr; B</h2><table>{head}{body}</table>"


def _rows_table(title: str, header: Sequence[str], rows: Iterable[tuple[dict[str, str], Sequence[object]]]) -> str:
    """A titled table whose rows each carry their attributes (a class that marks them, their numbers as
    data attributes, which tests read back) and cells, all escaped."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr"
        + "".join(f' {k}="{html.escape(v)}"' for k, v in attrs.items())
        + ">"
        + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
        + "</tr>"
        for attrs, cells in rows
    )
    return f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table>"


def _moves_table(moves: pl.DataFrame) -> str:
    """Per flow, each move between statuses with its user-flows; a move back is marked (red, "back")."""
    if moves.is_empty():
        return "<h2>Moves between statuses</h2><p>No user-flow changed status.</p>"
    rows = (
        (
            {
                "class": "move regression" if r["regression"] else "move",
                "data-flow": str(r["flow_slug"]),
                "data-before": r["before"],
                "data-after": r["after"],
                "data-count": str(r["user_flows"]),
            },
            (r["flow_slug"], r["before"], r["after"], r["user_flows"], "\u25bc back" if r["regression"] else ""),
        )
        for r in moves.to_dicts()
    )
    return _rows_table("Moves between statuses, per flow (user-flows)", ["flow", "from", "to", "user-flows", ""], rows)


def _regressed_table(regressed: pl.DataFrame) -> str:
    """The users who went backwards, each regressing change a marked row."""
    if regressed.is_empty():
        return "<h2>Users who regressed</h2><p>None.</p>"
    rows = (
        (
            {
                "class": "regressed",
                "data-user": str(r["user_id"]),
                "data-flow": str(r["flow_slug"]),
                "data-field": _field(r),
            },
            (r["user_id"], r["flow_slug"], _field(r), r["before"], r["after"]),
        )
        for r in regressed.head(LISTED).to_dicts()
    )
    title = f"Users who regressed: {regressed['user_id'].n_unique()} ({REGRESSIONS_FILE} lists every change)"
    more = regressed.height - LISTED
    tail = f"<p>... and {more} more in {REGRESSIONS_FILE}</p>" if more > 0 else ""
    return _rows_table(title, ["user", "flow", "field", "before", "after"], rows) + tail


def render_html(result: Audit) -> str:
    """Self-contained page; each bar carries its numbers as data attributes (tests read them back)."""
    summary, steps, flows = result.summary, result.steps, result.flows
    top = max([1, *steps["completed_a"].to_list(), *steps["completed_b"].to_list()])
    rows = "".join(
        f"<tr><th>{html.escape(k.replace('_', ' '))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in summary.items()
    )
    charts = []
    for (flow,), part in steps.group_by("flow_slug", maintain_order=True):
        bars, y = [], 0
        for r in part.to_dicts():
            for side, color in (("a", "#9aa5b1"), ("b", "#3b82f6")):
                n = int(r[f"completed_{side}"])
                w = round(CHART_W * n / top)
                label = html.escape(f"{r['step_id']} ({side.upper()})")
                bars.append(
                    f'<g><text x="0" y="{y + BAR_H - 3}" font-size="11">{label}</text>'
                    f'<rect class="bar" x="{LABEL_W}" y="{y}" width="{w}" height="{BAR_H}" fill="{color}" '
                    f'data-flow="{html.escape(str(flow))}" data-step="{html.escape(r["step_id"])}" '
                    f'data-side="{side.upper()}" data-count="{n}"/>'
                    f'<text x="{LABEL_W + w + 4}" y="{y + BAR_H - 3}" font-size="11">{n}</text></g>'
                )
                y += BAR_H + 2
            y += GAP
        width = LABEL_W + CHART_W + 60
        charts.append(
            f"<h2>{html.escape(str(flow))}</h2><p>Users with each step completed: A grey, B blue.</p>"
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}">{"".join(bars)}</svg>'
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>frigade-migrate audit</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "th,td{border:1px solid #ddd;padding:4px 8px;text-align:left}"
        "tr.regression,tr.regressed{background:#fee2e2;color:#b91c1c;font-weight:bold}</style></head><body>"
        f"<h1>State audit</h1><table>{rows}</table>{_moves_table(result.moves)}{_regressed_table(result.regressed)}"
        f"{_flow_table(flows)}{''.join(charts)}</body></html>"
    )


def write_audit(a_path: str, b_path: str, out: str | None) -> tuple[Path, dict[str, Any], str]:
    result = audit(a_path, b_path)
    folder = RunFolder(Path(out) if out else Path("audits") / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))
    if folder.root.exists() and not folder.root.is_dir():
        raise InputError("--out names a file: give a folder for audit.parquet, audit.md and audit.html", file=out)
    folder.root.mkdir(parents=True, exist_ok=True)
    folder.write_parquet("audit.parquet", result.changes)
    result.regressed.write_csv(folder.path(REGRESSIONS_FILE))
    md = render_markdown(result)
    folder.write_text("audit.md", md)
    folder.write_text("audit.html", render_html(result))
    return folder.root, result.summary, md


def main(a_path: str, b_path: str, out: str | None) -> int:
    root, _, md = write_audit(a_path, b_path, out)
    console = Console()
    console.print(md.split("\n## ")[0])
    regressed = pl.read_csv(root / REGRESSIONS_FILE, infer_schema=False)
    if regressed.height:
        users = regressed["user_id"].unique(maintain_order=True)
        shown = ", ".join(users.head(10).to_list()) + (f" and {users.len() - 10} more" if users.len() > 10 else "")
        console.print(f"users who regressed: {shown} (every change: {root / REGRESSIONS_FILE})", highlight=False)
    console.print(f"audit folder: {root} (open {root / 'audit.html'} for the moves and the funnel charts)")
    return ExitCode.OK
