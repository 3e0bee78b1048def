"""A home-grown state table as an app's Postgres writes it, with the state it means.

``\\copy user_onboarding TO 'user_onboarding.csv' CSV HEADER`` of a table with one row per user,
checklist and item: ``user_id, checklist, item, started_at, completed_at, dismissed`` (timestamptz in
Postgres's own text, ``2024-09-08 02:46:23.116739+00``, fractions trimmed as Postgres trims them; a
boolean written ``t`` / ``f``). A row with an empty item is about the whole checklist (shown, dismissed,
or done). Beside the checklist (done in any order), a linear product tour, a one-step announcement, and
a retired survey the mapping leaves out.

The expected state is what the table means, written down here as Frigade actions and replayed with
``frigade.rules``, independently of the mapping code under test: an item's times start and complete
its step; a checklist with every item done is completed when the last one was; a tour is completed by
its last step; a dismissal flag is the flow's latest status. ``data/make_samples.py`` writes the
files; a test checks the committed ones are exactly these.
"""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from frigade.rules import Action
from samples.exports import CATALOG, Built, expected_state

CHECKLIST = "flow_onboarding"
FOLDER = "state-table"
EXPORT = "user_onboarding.csv"
SEED = 20240908
T0 = datetime(2024, 9, 8, 2, 46, 23, 116739, tzinfo=UTC)
COLUMNS = ["user_id", "checklist", "item", "started_at", "completed_at", "dismissed"]
#: the app's checklist items -> the catalog's steps of flow_onboarding
ITEMS = {
    "connect_data": "connect-data",
    "invite_team": "invite-team",
    "first_dashboard": "create-dashboard",
    "alerts": "set-alerts",
}
#: the app's names of its flows -> Frigade slugs (beta_survey is retired: left out)
FLOWS = {"getting_started": "flow_onboarding", "product_tour": "flow_welcome_tour", "whats_new": "flow_announcement"}

MAPPING: dict[str, Any] = {
    "user": "user_id",
    "flow": "checklist",
    "step": "item",
    "state_table": {"started": "started_at", "completed": "completed_at", "dismissed": "dismissed"},
    "flow_map": {**FLOWS, "beta_survey": "DROP"},
    "step_map": {"flow_onboarding": ITEMS},
    "all_steps_complete_flow": ["flow_onboarding"],
    "last_step_completes_flow": ["flow_welcome_tour"],
}

Row = dict[str, str]


def pg_time(t: datetime) -> str:
    """A timestamptz as Postgres prints it in UTC: microseconds without trailing zeros, hour offset."""
    text = t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if t.microsecond:
        text += f".{t.microsecond:06d}".rstrip("0")
    return text + "+00"


def _row(user: str, flow: str, item: str = "", started: datetime | None = None, **rest: Any) -> Row:
    completed: datetime | None = rest.get("completed")
    return {
        "user_id": user,
        "checklist": flow,
        "item": item,
        "started_at": pg_time(started) if started else "",
        "completed_at": pg_time(completed) if completed else "",
        "dismissed": "t" if rest.get("dismissed") else "f",
    }


def _checklist(b: Built, rng: random.Random, user: str, start: datetime) -> None:
    """Items done in any order; all of them completes the checklist, or a dismissal ends it early."""
    kind = rng.choice(["all", "all", "some", "dismissed"])
    items = list(ITEMS)
    rng.shuffle(items)
    done = items if kind == "all" else items[: rng.randint(1, len(items) - 1)]
    times = [start + timedelta(minutes=7 * (n + 1), microseconds=rng.randrange(1_000_000)) for n in range(len(done))]
    for item, at in zip(done, times, strict=True):
        b.add(_row(user, "getting_started", item, completed=at))
        b.want(user, CHECKLIST, Action.COMPLETED_STEP, ITEMS[item], at, 1)
    if kind == "all":
        b.want(user, CHECKLIST, Action.COMPLETED_FLOW, None, max(times), 2)
    # an item never touched is still a row (the app inserts them all): no event, counted dropped
    for item in items[len(done) :][:1]:
        b.add(_row(user, "getting_started", item), "dropped")
    if kind == "dismissed" or rng.random() < 0.5:
        b.add(_row(user, "getting_started", started=start, dismissed=kind == "dismissed"))
        b.want(user, CHECKLIST, Action.STARTED_FLOW, None, start, 0)
        if kind == "dismissed":
            b.want(user, CHECKLIST, Action.SKIPPED_FLOW, None, max([start, *times]), 2)


def _tour(b: Built, rng: random.Random, user: str, start: datetime) -> None:
    """A linear tour: steps in order, its last step's completion completes it."""
    steps = CATALOG["flow_welcome_tour"]
    kind = rng.choice(["complete", "progress", "dismissed"])
    reached = len(steps) if kind == "complete" else rng.randrange(1, len(steps))
    at = start
    last = start
    for n, step in enumerate(steps[:reached]):
        seen, at = at + timedelta(minutes=1), at + timedelta(minutes=2, microseconds=rng.randrange(1000) * 1000)
        finished = n < reached - 1 or kind == "complete"
        b.add(_row(user, "product_tour", step, started=seen, completed=at if finished else None))
        b.want(user, "flow_welcome_tour", Action.STARTED_STEP, step, seen, 0)
        last = seen
        if finished:
            b.want(user, "flow_welcome_tour", Action.COMPLETED_STEP, step, at, 1)
            last = at
    if kind == "complete":
        b.want(user, "flow_welcome_tour", Action.COMPLETED_FLOW, None, last, 2)
    if kind == "dismissed":
        b.add(_row(user, "product_tour", dismissed=True))
        b.want(user, "flow_welcome_tour", Action.SKIPPED_FLOW, None, last, 2)


def _announcement(b: Built, rng: random.Random, user: str, start: datetime) -> None:
    """A flow row only: seen and completed, or seen and dismissed."""
    seen = start.replace(microsecond=0) + timedelta(hours=1)
    if rng.random() < 0.5:
        done = seen + timedelta(seconds=40)
        b.add(_row(user, "whats_new", started=seen, completed=done))
        b.want(user, "flow_announcement", Action.STARTED_FLOW, None, seen, 0)
        b.want(user, "flow_announcement", Action.COMPLETED_FLOW, None, done, 1)
    else:
        b.add(_row(user, "whats_new", started=seen, dismissed=True))
        b.want(user, "flow_announcement", Action.STARTED_FLOW, None, seen, 0)
        b.want(user, "flow_announcement", Action.SKIPPED_FLOW, None, seen, 2)


def build(seed: int = SEED) -> Built:
    rng = random.Random(f"{seed}:{FOLDER}")
    b = Built()
    for i in range(1, 13):
        user = f"{1000 + i}"
        start = T0 + timedelta(hours=6 * i, minutes=rng.randrange(50))
        _checklist(b, rng, user, start)
        if rng.random() < 0.7:
            _tour(b, rng, user, start + timedelta(days=1))
        if rng.random() < 0.5:
            _announcement(b, rng, user, start)
    # a retired survey the mapping leaves out (flow_map: DROP), a checklist item the catalog lacks,
    # and a time no one could read
    b.add(_row("1001", "beta_survey", started=T0, completed=T0 + timedelta(minutes=3)), "dropped")
    b.add(_row("1002", "getting_started", "import_csv", completed=T0), "quarantined")
    b.add({**_row("1003", "whats_new", started=T0), "started_at": "yesterday"}, "quarantined")
    pairs = list(zip(b.rows, b.fates, strict=True))
    rng.shuffle(pairs)
    b.rows, b.fates = [p[0] for p in pairs], [p[1] for p in pairs]
    return b


def render(seed: int = SEED) -> dict[str, str]:
    """The sample's files (name -> text)."""
    b = build(seed)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(b.rows)
    header = "# user_onboarding, as `\\copy user_onboarding TO 'user_onboarding.csv' CSV HEADER` writes it\n"
    return {
        EXPORT: buf.getvalue(),
        "mapping.yaml": header + yaml.safe_dump(MAPPING, sort_keys=False, default_flow_style=None, width=120),
        "expected.json": json.dumps(expected_state(b), indent=1) + "\n",
    }


def write(data: Path, seed: int = SEED) -> list[Path]:
    folder = data / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render(seed).items():
        (folder / name).write_text(text, encoding="utf-8")
        written.append(folder / name)
    return written
