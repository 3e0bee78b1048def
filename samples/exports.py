"""Deterministic sample exports, one per preset, generated from a known per-user target.

For every user and flow the generator draws a journey (progress to step k, complete, or skip at step
k), renders it in the tool's own vocabulary, field names, nesting and container (as the vendor's
documentation describes them: the sources are cited in ``transforms/presets/README.md``), and writes
down the Frigade actions the tool's documented events mean. The expected state is those actions
replayed with ``frigade.rules`` -- independently of the mapping code under test. Messy rows
(duplicates, out-of-order and late rows, non-state events, rows that must be quarantined) are added
with their known fate, so the row accounting can be checked too.

``data/make_samples.py`` writes them under ``data/``; the tests regenerate them and compare (the rows
inside gzip and zip files, whose bytes depend on the zlib build).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import yaml

from frigade.rules import DEFAULT_RULES, Action, FlowState, Rules, replay

A = Action
SEED = 20240301
#: the active flows of data/catalog.yaml, in step order
CATALOG: dict[str, tuple[str, ...]] = {
    "flow_onboarding": ("connect-data", "invite-team", "create-dashboard", "set-alerts"),
    "flow_welcome_tour": ("welcome", "sidebar", "search"),
    "flow_announcement": ("reports-v2",),
}
T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)

Row = dict[str, Any]
#: per catalog flow: the vendor's flow id and, per catalog step, the vendor's step id
VendorIds = dict[str, tuple[str, dict[str, str]]]


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample export: its folder under data/, the export (a file, or a folder of files), its
    container, preset, and the optional mapping file. Vendor samples carry their own catalog.yaml,
    whose flows and steps are the vendor's ids."""

    preset: str
    folder: str
    export: str
    mapping: str | None = None
    #: how the rows are shipped: csv, jsonl, or one of CONTAINERS (default: by the export's suffix)
    container: str = ""
    catalog: str | None = None

    def path(self, data: Path) -> Path:
        return data / self.folder / self.export

    def mapping_path(self, data: Path) -> Path | None:
        return data / self.folder / self.mapping if self.mapping else None

    def expected_path(self, data: Path) -> Path:
        return data / self.folder / "expected.json"

    def catalog_path(self, data: Path) -> Path:
        """The catalog this sample targets: its own (vendor ids), else data/catalog.yaml."""
        return data / self.folder / self.catalog if self.catalog else data / "catalog.yaml"


@dataclass(frozen=True, slots=True)
class Journey:
    kind: str  # progress | complete | skip
    k: int = 0  # the step reached (progress, skip)


@dataclass(slots=True)
class Built:
    """Rows of one export, each row's fate (valid | dropped | quarantined), and the intended actions."""

    rows: list[Row] = field(default_factory=list)
    fates: list[str] = field(default_factory=list)
    #: the vendor's ids of the catalog's flows and steps (empty: the export names the catalog's own)
    ids: VendorIds = field(default_factory=dict)
    #: (user, flow, action, step, time, order within the row)
    intended: list[tuple[str, str, Action, str | None, datetime, int]] = field(default_factory=list)

    def add(self, row: Row, fate: str = "valid") -> None:
        self.rows.append(row)
        self.fates.append(fate)

    def want(self, user: str, flow: str, action: Action, step: str | None, at: datetime, seq: int = 0) -> None:
        self.intended.append((user, flow, action, step, at, seq))


# ---------------------------------------------------------------- journeys


def draw_journeys(rng: random.Random, users: list[str], *, most: int = 3) -> list[tuple[str, str, Journey, datetime]]:
    """(user, flow, journey, start time) for 1 to ``most`` flows per user."""
    out = []
    pool = list(CATALOG)
    for i, user in enumerate(users):
        chosen = sorted(rng.sample(pool, rng.randint(1, most)))
        for j, flow in enumerate(chosen):
            n = len(CATALOG[flow])
            kind = rng.choice(["progress", "complete", "complete", "skip"])
            k = rng.randrange(n) if kind != "complete" else n
            start = T0 + timedelta(hours=i * 5 + j, minutes=rng.randrange(50))
            out.append((user, flow, Journey(kind, k), start))
    return out


def generic_actions(flow: str, j: Journey) -> list[tuple[Action, str | None]]:
    """What a tool that logs every action writes for a journey."""
    steps = CATALOG[flow]
    acts: list[tuple[Action, str | None]] = [(A.STARTED_FLOW, None)]
    reached = len(steps) if j.kind == "complete" else j.k
    for i in range(reached):
        acts += [(A.STARTED_STEP, steps[i]), (A.COMPLETED_STEP, steps[i])]
    if j.kind == "complete":
        acts.append((A.COMPLETED_FLOW, None))
    else:
        acts.append((A.STARTED_STEP, steps[j.k]))
        if j.kind == "skip":
            acts.append((A.SKIPPED_FLOW, None))
    return acts


def _times(start: datetime, n: int, rng: random.Random) -> list[datetime]:
    out, t = [], start
    for _ in range(n):
        t += timedelta(seconds=rng.randint(20, 400), microseconds=rng.randrange(1000) * 1000)
        out.append(t)
    return out


def _uid(rng: random.Random, n: int = 12) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(n))


def _uuid(rng: random.Random) -> str:
    h = _hex(rng, 32)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------- renderers, one per preset

LONG_USERS = [f"user_{i:02d}" for i in range(1, 21)]


def build_long(rng: random.Random) -> Built:
    b = Built()
    zones = [UTC, ZoneInfo("Europe/Paris"), ZoneInfo("America/New_York")]
    for user, flow, j, start in draw_journeys(rng, LONG_USERS, most=2):
        acts = generic_actions(flow, j)
        if user == "user_03" and j.kind == "complete":
            # a missing predecessor: the export lost this user's step starts
            acts = [a for a in acts if a[0] is not A.STARTED_STEP]
        for (action, step), t in zip(acts, _times(start, len(acts), rng), strict=True):
            zone = zones[rng.randrange(3)]
            data = json.dumps({"source": "legacy-db"}) if rng.random() < 0.2 else ""
            b.add(
                {
                    "user_id": user,
                    "group_id": f"org_{int(user[-2:]) % 4}" if rng.random() < 0.7 else "",
                    "flow_slug": flow,
                    "step_id": step or "",
                    "action": action.value,
                    "created_at": t.astimezone(zone).isoformat(timespec="seconds"),
                    "data": data,
                }
            )
            b.want(user, flow, action, step, t.replace(microsecond=0))
    # duplicates: overlapping export windows repeat rows
    for i in rng.sample(range(len(b.rows)), 4):
        b.add(dict(b.rows[i]))
    # a reset: user_20 finishes the tour, is reset, and starts it again
    t = T0 + timedelta(days=10)
    tour = CATALOG["flow_welcome_tour"]
    reset_acts: list[tuple[Action, str | None]] = [
        (A.STARTED_FLOW, None),
        *[(a, s) for s in tour for a in (A.STARTED_STEP, A.COMPLETED_STEP)],
        (A.COMPLETED_FLOW, None),
        (A.NOT_STARTED_FLOW, None),
        (A.STARTED_STEP, tour[0]),
    ]
    for i, (action, step) in enumerate(reset_acts):
        at = t + timedelta(minutes=i)
        b.add(_long_row("user_20", "flow_welcome_tour", action.value, step, at))
        b.want("user_20", "flow_welcome_tour", action, step, at)
    # non-state telemetry (dropped)
    b.add(_long_row("user_01", "flow_onboarding", "STEP_VIEWED", "connect-data", T0), "dropped")
    b.add(_long_row("user_02", "flow_welcome_tour", "CTA_CLICKED", "welcome", T0), "dropped")
    b.add(_long_row("user_05", "flow_announcement", "BANNER_SHOWN", None, T0), "dropped")
    # quarantined, naming no user to migrate. The quick start migrates this sample and must end clean,
    # so it has no progress that cannot be migrated: the other presets' samples have some (an unknown
    # flow, step or action), and a run of them ends saying so (exit 1).
    b.add(_long_row("", "flow_onboarding", "STARTED_FLOW", None, T0), "quarantined")
    return b


def _long_row(user: str, flow: str, action: str, step: str | None, at: datetime) -> Row:
    return {
        "user_id": user,
        "group_id": "",
        "flow_slug": flow,
        "step_id": step or "",
        "action": action,
        "created_at": _iso(at),
        "data": "",
    }


# ---------------------------------------------------------------- vendors, as their documentation ships them
#
# Each vendor sample is written from the vendor's own documentation (cited in
# transforms/presets/README.md): its field names, nesting, event names, time style and container. Its
# flows and steps keep the vendor's ids, and the sample's own catalog.yaml names the Frigade flows
# after them, so ``--preset NAME --catalog data/NAME/catalog.yaml`` is the whole command.


def vendor_ids(flow_id: Callable[[], str], step_id: Callable[[], str]) -> VendorIds:
    """The vendor's id of each catalog flow and step (drawn in catalog order)."""
    return {flow: (flow_id(), {s: step_id() for s in steps}) for flow, steps in CATALOG.items()}


def checklist_actions(
    rng: random.Random, flow: str, j: Journey, *, item_started: bool
) -> list[tuple[Action, str | None]]:
    """A checklist's journey: items done in any order (a drawn permutation), not one after another."""
    items = list(CATALOG[flow])
    rng.shuffle(items)
    done = items if j.kind == "complete" else items[: j.k]
    acts: list[tuple[Action, str | None]] = [(A.STARTED_FLOW, None)]
    for item in done:
        if item_started and rng.random() < 0.4:
            acts.append((A.STARTED_STEP, item))
        acts.append((A.COMPLETED_STEP, item))
    if j.kind == "complete":
        acts.append((A.COMPLETED_FLOW, None))
    elif j.kind == "skip":
        acts.append((A.SKIPPED_FLOW, None))
    return acts


#: Appcues: flows are tours; flow_onboarding is an Appcues checklist
APPCUES_CHECKLISTS = ("flow_onboarding",)


def build_appcues(rng: random.Random) -> Built:
    """Public API events export (CSV): flow events carry flow_id / step_id, checklist events
    checklist_id / checklist_item_id; names with or without the appcues: / appcues:v2: prefix."""
    b = Built(ids=vendor_ids(lambda: "-" + _uid(rng, 19), lambda: _uuid(rng)))
    flow_names = {
        A.STARTED_FLOW: "flow_started",
        A.STARTED_STEP: "step_started",
        A.COMPLETED_STEP: "step_completed",
        A.COMPLETED_FLOW: "flow_completed",
        A.SKIPPED_FLOW: "flow_skipped",
    }
    checklist_names = {
        A.STARTED_FLOW: "checklist_shown",
        A.STARTED_STEP: "checklist_item_started",
        A.COMPLETED_STEP: "checklist_item_completed",
        A.COMPLETED_FLOW: "checklist_completed",
        A.SKIPPED_FLOW: "checklist_skipped",
    }
    users = [f"ac-{i:03d}" for i in range(1, 11)]
    for user, flow, j, start in draw_journeys(rng, users):
        checklist = flow in APPCUES_CHECKLISTS
        acts = checklist_actions(rng, flow, j, item_started=True) if checklist else generic_actions(flow, j)
        vid, steps = b.ids[flow]
        for (action, step), t in zip(acts, _times(start, len(acts), rng), strict=True):
            prefix = rng.choice(["", "appcues:", "appcues:v2:"])
            epoch = rng.random() < 0.25
            row: Row = {
                "name": prefix + (checklist_names if checklist else flow_names)[action],
                "timestamp": str(round(t.timestamp() * 1000)) if epoch else _iso(t),
                "user_id": user,
                "account_id": "acct_1",
                "flow_id": "" if checklist else vid,
                "step_id": "" if checklist or step is None else steps[step],
                "step_number": "" if checklist or step is None else str(CATALOG[flow].index(step)),
                "checklist_id": vid if checklist else "",
                "checklist_item_id": steps[step] if checklist and step else "",
            }
            b.add(row)
            b.want(user, flow, action, step, t)
            if action is A.STARTED_STEP and not checklist and rng.random() < 0.3:
                b.add({**row, "name": prefix + "step_interacted"}, "dropped")
    tour = b.ids["flow_welcome_tour"][0]
    extra = {"timestamp": _iso(T0), "user_id": "ac-001", "account_id": "", "step_id": "", "step_number": ""}
    extra |= {"checklist_id": "", "checklist_item_id": ""}
    b.add({**extra, "name": "appcues:flow_aborted", "flow_id": tour}, "dropped")
    b.add({**extra, "name": "appcues:v2:step_child_activated", "flow_id": tour}, "dropped")
    b.add({**extra, "name": "flow_error", "flow_id": tour}, "dropped")
    b.add({**extra, "name": "flow_started", "flow_id": "-OldFlow1234"}, "quarantined")
    b.add({**extra, "name": "appcues:flow_restarted", "flow_id": tour}, "quarantined")
    return b


def _userflow_time(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds")


def build_userflow(rng: random.Random) -> Built:
    """Event objects of the REST API / webhooks: ``{id, object: "event", name, time, user_id, group_id,
    attributes}``; flow and checklist ids in ``attributes``. flow_onboarding is a Userflow checklist."""
    b = Built(ids=vendor_ids(lambda: _uuid(rng), lambda: _uuid(rng)))
    users = [f"uf_{i}" for i in range(101, 111)]
    for user, flow, j, start in draw_journeys(rng, users):
        vid, ids = b.ids[flow]
        steps = CATALOG[flow]
        events: list[tuple[str, str | None]]
        if flow == "flow_onboarding":
            acts = checklist_actions(rng, flow, j, item_started=False)
            names = {A.STARTED_FLOW: "checklist_started", A.COMPLETED_STEP: "checklist_task_completed"}
            names |= {A.COMPLETED_FLOW: "checklist_completed", A.SKIPPED_FLOW: "checklist_ended"}
            events = [(names[a], s) for a, s in acts]
            if j.kind == "complete":
                events.append(("checklist_ended", None))  # also written after a completion
        else:
            seen = len(steps) if j.kind == "complete" else j.k + 1
            events = [("flow_started", None), *[("flow_step_seen", steps[i]) for i in range(seen)]]
            if j.kind == "complete":
                events += [("flow_completed", steps[-1]), ("flow_ended", steps[-1])]
            elif j.kind == "skip":
                events.append(("flow_ended", steps[j.k]))
        for (name, step), t in zip(events, _times(start, len(events), rng), strict=True):
            attributes: Row
            if name.startswith("checklist"):
                attributes = {"checklist_id": vid, "checklist_name": flow.removeprefix("flow_").title()}
                if step:
                    attributes |= {"checklist_task_id": ids[step], "checklist_task_name": step}
            else:
                attributes = {"flow_id": vid, "flow_name": flow.removeprefix("flow_").title(), "flow_type": "flow"}
                if step:
                    attributes |= {"flow_step_id": ids[step], "flow_step_number": steps.index(step)}
            row = {
                "id": _uuid(rng),
                "object": "event",
                "name": name,
                "time": _userflow_time(t),
                "user_id": user,
                "group_id": "grp_1" if rng.random() < 0.5 else None,
                "attributes": attributes,
            }
            fate = "valid"
            if name in ("flow_started", "checklist_started"):
                b.want(user, flow, A.STARTED_FLOW, None, t)
            elif name == "flow_step_seen":
                assert step is not None
                b.want(user, flow, A.STARTED_STEP, step, t)
                idx = steps.index(step)
                if idx > 0:
                    b.want(user, flow, A.COMPLETED_STEP, steps[idx - 1], t, 1)
            elif name == "checklist_task_completed":
                b.want(user, flow, A.COMPLETED_STEP, step, t)
            elif name in ("flow_completed", "checklist_completed"):
                b.want(user, flow, A.COMPLETED_FLOW, None, t)
                b.want(user, flow, A.COMPLETED_STEP, steps[-1], t, 1)
            elif j.kind == "complete":
                fate = "dropped"  # the ending written after a completion is the same ending
            else:
                b.want(user, flow, A.SKIPPED_FLOW, None, t)
            b.add(row, fate)
            if name == "flow_step_seen" and rng.random() < 0.2:
                b.add({**row, "id": _uuid(rng), "name": "flow_step_clicked"}, "dropped")
    gone = {"flow_id": _uuid(rng), "flow_name": "Trial nudge", "flow_type": "flow"}
    b.add(
        {"id": _uuid(rng), "object": "event", "name": "flow_started", "time": _userflow_time(T0)}
        | {"user_id": "uf_101", "group_id": None, "attributes": gone},
        "quarantined",
    )
    return b


def webhook_deliveries(rows: list[Row], rng: random.Random) -> list[Row]:
    """The same event objects as Userflow's webhooks deliver them (topic event.tracked), one level deeper."""
    return [
        {
            "id": _uuid(rng),
            "object": "webhook_event",
            "api_version": "2020-01-03",
            "created_at": row["time"],
            "topic": "event.tracked",
            "data": {"object": row},
        }
        for row in rows
    ]


def build_userflow_webhooks(rng: random.Random) -> Built:
    b = build_userflow(random.Random(f"{SEED}:userflow"))
    b.rows = webhook_deliveries(b.rows, rng)
    # a delivery retried: a new delivery id around the same event (its id de-duplicates it)
    retried = b.fates.index("valid", 5)
    b.add({**b.rows[retried], "id": _uuid(rng)}, "valid")
    return b


def build_pendo(rng: random.Random) -> Built:
    """Aggregation API, source guideEvents: records under ``results``, browserTime in epoch ms."""
    b = Built(ids=vendor_ids(lambda: _uid(rng, 27), lambda: _uid(rng, 27)))
    users = [f"visitor-{i}" for i in range(1, 11)]
    for user, flow, j, start in draw_journeys(rng, users):
        steps = CATALOG[flow]
        vid, ids = b.ids[flow]
        reached = len(steps) if j.kind == "complete" else j.k
        events: list[tuple[str, str]] = []
        for i in range(reached):
            events += [("guideSeen", steps[i]), ("guideAdvanced", steps[i])]
        if j.kind != "complete":
            events.append(("guideSeen", steps[j.k]))
            if j.kind == "skip":
                events.append(("guideDismissed", steps[j.k]))
        first = True
        for (kind, step), t in zip(events, _times(start, len(events), rng), strict=True):
            b.add(
                {
                    "accountId": "acme",
                    "visitorId": user,
                    "guideId": vid,
                    "guideStepId": ids[step],
                    "type": kind,
                    "browserTime": round(t.timestamp() * 1000),
                    "remoteIp": f"203.0.113.{rng.randrange(1, 255)}",
                    "url": "https://app.example.com/home",
                    "country": "US",
                }
            )
            if kind == "guideSeen":
                if first:
                    b.want(user, flow, A.STARTED_FLOW, None, t)
                    first = False
                b.want(user, flow, A.STARTED_STEP, step, t, 1)
            elif kind == "guideAdvanced":
                b.want(user, flow, A.COMPLETED_STEP, step, t)
                if step == steps[-1]:
                    b.want(user, flow, A.COMPLETED_FLOW, None, t, 1)
            else:
                b.want(user, flow, A.SKIPPED_FLOW, None, t)
            if rng.random() < 0.1:
                b.add({**b.rows[-1], "type": rng.choice(["guideSnoozed", "guideTimeout"])}, "dropped")
    # a guide dismissed, shown again a day later and completed: Pendo's last word is the completion
    tour = CATALOG["flow_welcome_tour"]
    vid, ids = b.ids["flow_welcome_tour"]
    again: list[tuple[str, str]] = [("guideSeen", tour[0]), ("guideDismissed", tour[0])]
    for step in tour:
        again += [("guideSeen", step), ("guideAdvanced", step)]
    first = True
    for n, (kind, step) in enumerate(again):
        t = T0 + timedelta(days=3 if n < 2 else 4, minutes=n)
        row = {"accountId": "acme", "visitorId": "visitor-11", "guideId": vid, "guideStepId": ids[step]}
        b.add({**row, "type": kind, "browserTime": round(t.timestamp() * 1000), "remoteIp": "203.0.113.5"})
        if kind == "guideSeen":
            if first:
                b.want("visitor-11", "flow_welcome_tour", A.STARTED_FLOW, None, t)
                first = False
            b.want("visitor-11", "flow_welcome_tour", A.STARTED_STEP, step, t, 1)
        elif kind == "guideAdvanced":
            b.want("visitor-11", "flow_welcome_tour", A.COMPLETED_STEP, step, t)
            if step == tour[-1]:
                b.want("visitor-11", "flow_welcome_tour", A.COMPLETED_FLOW, None, t, 1)
        # the dismissal is superseded by the later start (latest_status_wins): no SKIPPED_FLOW
    at = round(T0.timestamp() * 1000)
    base = {"accountId": "acme", "type": "guideSeen", "browserTime": at, "remoteIp": "203.0.113.9", "url": ""}
    b.add({**base, "visitorId": "visitor-1", "guideId": _uid(rng, 27), "guideStepId": _uid(rng, 27)}, "quarantined")
    guide, guide_steps = b.ids["flow_welcome_tour"]
    anonymous = {"visitorId": "_PENDO_T_a1b2c3d4", "guideId": guide, "guideStepId": guide_steps["welcome"]}
    b.add({**base, **anonymous}, "quarantined")
    return b


def build_chameleon(rng: random.Random) -> Built:
    """``GET /v3/analyze/interactions``: one interaction per user and tour, its state, profile.uid."""
    b = Built(ids=vendor_ids(lambda: _hex(rng, 24), lambda: _hex(rng, 24)))
    users = [f"5f{i:03d}c" for i in range(1, 15)]
    for user, flow, _j, start in draw_journeys(rng, users):
        state = rng.choice(["started", "displayed", "completed", "completed", "exited"])
        updated = start + timedelta(minutes=rng.randint(1, 90))
        b.add(
            {
                "id": _hex(rng, 24),
                "created_at": _iso(start),
                "updated_at": _iso(updated),
                "state": state,
                "tour_id": b.ids[flow][0],
                "group_kind": "campaign",
                "defer_count": 0,
                "goal_at": _iso(updated) if state == "completed" else None,
                "profile": {"id": _hex(rng, 24), "uid": user},
            }
        )
        if state == "completed":
            b.want(user, flow, A.COMPLETED_FLOW, None, updated)
        elif state == "exited":
            b.want(user, flow, A.STARTED_FLOW, None, updated)
            b.want(user, flow, A.SKIPPED_FLOW, None, updated, 1)
        else:
            b.want(user, flow, A.STARTED_FLOW, None, updated)
    b.add(json.loads(json.dumps(b.rows[2])))  # overlapping export windows repeat an interaction
    b.add({**b.rows[0], "id": _hex(rng, 24), "profile": {"id": _hex(rng, 24), "uid": None}}, "quarantined")
    b.add({**b.rows[1], "id": _hex(rng, 24), "tour_id": _hex(rng, 24)}, "quarantined")
    return b


def build_userpilot(rng: random.Random) -> Built:
    """Data sync export: event_type beside event_name; interaction events name
    ``{entity_type}:{entity_id}:{status}``; identify_user / page_view rows carry no event name."""
    # steps are numbered in the event name (1-based, the preset's step_by: index1): the Frigade step
    # ids stay the catalog's own
    b = Built(ids={f: (str(rng.randrange(10000, 99999)), {s: s for s in steps}) for f, steps in CATALOG.items()})
    users = [f"up{i:04d}" for i in range(1, 11)]

    def row(user: str, kind: str, name: str, t: datetime) -> Row:
        return {
            "app_token": "NX-4f1d2c",
            "event_type": kind,
            "event_name": name,
            "user_id": user,
            "company_id": "c-77",
            "source": "web-client",
            "inserted_at": t.strftime("%Y-%m-%d %H:%M:%S.%f"),
            "hostname": "app.example.com",
            "pathname": "/home",
        }

    for user, flow, j, start in draw_journeys(rng, users):
        cid = b.ids[flow][0]
        steps = CATALOG[flow]
        status = {
            A.STARTED_FLOW: "flow:{c}:SEEN",
            A.STARTED_STEP: "step:{c}:{n}:SEEN",
            A.COMPLETED_STEP: "step:{c}:{n}:COMPLETED",
            A.COMPLETED_FLOW: "flow:{c}:COMPLETED",
            A.SKIPPED_FLOW: "flow:{c}:DISMISSED",
        }
        acts = generic_actions(flow, j)
        times = _times(start, len(acts), rng)
        b.add(row(user, "identify_user", "", start), "dropped")
        for (action, step), t in zip(acts, times, strict=True):
            b.add(row(user, "interaction", status[action].format(c=cid, n=steps.index(step) + 1 if step else 0), t))
            b.want(user, flow, action, step, t)
            if rng.random() < 0.15:
                b.add(row(user, "page_view", "", t), "dropped")
    at = T0
    b.add(row("up0001", "interaction", "survey:553:SEEN", at), "dropped")
    b.add(row("up0002", "track", "Clicked Upgrade", at), "dropped")
    b.add(row("up0003", "interaction", "flow:99999:SEEN", at), "quarantined")
    b.add(row("up0003", "interaction", f"flow:{b.ids['flow_onboarding'][0]}:HOVERED", at), "quarantined")
    return b


ANALYTICS_NAMES = {
    A.STARTED_FLOW: "Flow Started",
    A.STARTED_STEP: "Step Viewed",
    A.COMPLETED_STEP: "Step Completed",
    A.COMPLETED_FLOW: "Flow Completed",
    A.SKIPPED_FLOW: "Flow Dismissed",
}


def _tracked(rng: random.Random, users: list[str]) -> Iterator[tuple[str, str, Action, str | None, datetime, Row]]:
    """Each drawn journey's events, the flow and step as event properties (the names the customer's
    own tracking plan gave them: analytics tools have none)."""
    for user, flow, j, start in draw_journeys(rng, users):
        acts = generic_actions(flow, j)
        for (action, step), t in zip(acts, _times(start, len(acts), rng), strict=True):
            props: Row = {"flow_id": flow}
            if step:
                props["step_id"] = step
            yield user, flow, action, step, t, props


def build_segment(rng: random.Random) -> Built:
    """S3 / GCS logs: the full call of every message, one JSON object a line."""
    b = Built()
    for user, flow, action, step, t, props in _tracked(rng, [f"usr_{i:03d}" for i in range(1, 11)]):
        received = t + timedelta(seconds=rng.randint(1, 90))
        row = {
            "anonymousId": _uuid(rng),
            "context": {"library": {"name": "analytics.js", "version": "4.1.0"}, "ip": "203.0.113.7"},
            "event": ANALYTICS_NAMES[action],
            "integrations": {},
            "messageId": f"ajs-next-{_uid(rng, 32)}",
            "originalTimestamp": _iso(t),
            "properties": props,
            "receivedAt": _iso(received),
            "sentAt": _iso(t),
            "timestamp": _iso(t),
            "type": "track",
            "userId": user,
            "version": 2,
        }
        b.add(row)
        b.want(user, flow, action, step, t)
        if rng.random() < 0.1:
            b.add(json.loads(json.dumps(row)))  # a retried delivery: same messageId
    base = {"anonymousId": _uuid(rng), "timestamp": _iso(T0), "receivedAt": _iso(T0), "version": 2}
    identify = {"type": "identify", "userId": "usr_001", "messageId": "ajs-id-1", "traits": {"plan": "pro"}}
    b.add({**base, **identify}, "dropped")
    page = {"type": "page", "userId": "usr_002", "messageId": "ajs-pg-1", "properties": {"path": "/"}}
    b.add({**base, **page}, "dropped")
    signed = {"type": "track", "event": "Signed Up", "userId": "usr_003", "messageId": "ajs-su"}
    b.add({**base, **signed, "properties": {"plan": "pro"}}, "dropped")
    anon = {"type": "track", "event": "Flow Started", "userId": None, "messageId": "ajs-anon"}
    b.add({**base, **anon, "properties": {"flow_id": "flow_onboarding"}}, "quarantined")
    return b


def _bigquery_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f UTC")


def build_segment_warehouse(rng: random.Random) -> Built:
    """Warehouse tables: one table per track event, its properties as snake_case columns, exported
    from BigQuery as CSV (times as BigQuery writes them, ``2024-03-01 19:00:14.999000 UTC``)."""
    b = Built()
    for user, flow, action, step, t, props in _tracked(rng, [f"wh_{i:03d}" for i in range(1, 11)]):
        name = ANALYTICS_NAMES[action]
        table = name.lower().replace(" ", "_")
        row: Row = {
            TABLE: table,
            "id": f"ajs-next-{_uid(rng, 32)}",
            "anonymous_id": _uuid(rng),
            "context_library_name": "analytics.js",
            "event": table,
            "event_text": name,
            "original_timestamp": _bigquery_time(t),
            "received_at": _bigquery_time(t + timedelta(seconds=rng.randint(1, 90))),
            "sent_at": _bigquery_time(t),
            "timestamp": _bigquery_time(t),
            "user_id": user,
            "uuid_ts": _bigquery_time(t + timedelta(minutes=5)),
            **props,
        }
        b.add(row)
        b.want(user, flow, action, step, t)
    at = _bigquery_time(T0)
    other = {TABLE: "signed_up", "id": "ajs-su", "event": "signed_up", "event_text": "Signed Up", "timestamp": at}
    b.add({**other, "user_id": "wh_003", "plan": "pro"}, "dropped")
    anon = {TABLE: "flow_started", "id": "ajs-anon", "event": "flow_started", "event_text": "Flow Started"}
    b.add({**anon, "timestamp": at, "user_id": None, "flow_id": "flow_onboarding"}, "quarantined")
    return b


def build_mixpanel(rng: random.Random) -> Built:
    """Raw Export API: ``{"event", "properties": {time (epoch s), distinct_id, $insert_id, ...}}``."""
    b = Built()
    names = {a: n.lower().replace(" ", "_").replace("viewed", "started") for a, n in ANALYTICS_NAMES.items()}
    users = [f"{1000 + i}" for i in range(1, 11)]
    for user, flow, j, start in draw_journeys(rng, users):
        acts = generic_actions(flow, j)
        for (action, step), t in zip(acts, _times(start, len(acts), rng), strict=True):
            t = t.replace(microsecond=0)
            props: dict[str, Any] = {
                "time": int(t.timestamp()),
                "distinct_id": user,
                "$insert_id": _uid(rng, 16),
                "mp_processing_time_ms": int(t.timestamp()) * 1000 + rng.randrange(90_000),
                "flow_id": flow,
                "mp_lib": "web",
            }
            if step:
                props["step_id"] = step
            row = {"event": names[action], "properties": props}
            b.add(row)
            b.want(user, flow, action, step, t)
            if rng.random() < 0.15:
                b.add(json.loads(json.dumps(row)))  # raw exports are not de-duplicated
    epoch = int(T0.timestamp())
    b.add({"event": "$mp_web_page_view", "properties": {"time": epoch, "distinct_id": "1001"}}, "dropped")
    device = {"time": epoch, "distinct_id": "$device:18c2f0a9e", "$insert_id": "dev1", "flow_id": "flow_onboarding"}
    b.add({"event": "flow_started", "properties": device}, "quarantined")
    return b


AMPLITUDE_PROJECT = "187520"


def build_amplitude(rng: random.Random) -> Built:
    """Export API: event_type, user_id, event_properties, event_time (UTC, no zone), $insert_id."""
    b = Built()
    for user, flow, action, step, t, props in _tracked(rng, [f"amp-user-{i}" for i in range(1, 11)]):
        row = {
            "$insert_id": _uuid(rng),
            "amplitude_id": rng.randrange(10**11, 10**12),
            "app": int(AMPLITUDE_PROJECT),
            "device_id": _uuid(rng),
            "event_properties": props,
            "event_time": _amp_time(t),
            "client_event_time": _amp_time(t),
            "server_upload_time": _amp_time(t + timedelta(seconds=2)),
            "event_type": ANALYTICS_NAMES[action],
            "user_id": user,
            "uuid": _uuid(rng),
        }
        b.add(row)
        b.want(user, flow, action, step, t)
        if rng.random() < 0.1:
            b.add(json.loads(json.dumps(row)))
    at = _amp_time(T0)
    base: Row = {"device_id": "dev", "event_time": at, "server_upload_time": at, "uuid": _uuid(rng)}
    base |= {"event_properties": {"flow_id": "flow_onboarding"}}
    b.add({**base, "event_type": "session_start", "user_id": "amp-user-1", "$insert_id": "s1"}, "dropped")
    b.add({**base, "event_type": "Flow Started", "user_id": None, "$insert_id": "anon1"}, "quarantined")
    return b


def _amp_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def build_frigade_csv(rng: random.Random) -> tuple[Built, dict[str, Any]]:
    b = Built()
    flow = "flow_onboarding"
    steps = CATALOG[flow]
    for i in range(1, 17):
        user = f"customer-{i:02d}"
        status = rng.choice(["Not Started", "In Progress", "In Progress", "Completed", "Skipped"])
        k = rng.randrange(len(steps))
        t = T0 + timedelta(hours=i, seconds=rng.randrange(3600))
        current = steps[-1] if status == "Completed" else steps[k] if status != "Not Started" else ""
        b.add(
            {"User ID": user, "Status": status, "Current Step": current, "Last Updated": _iso(t)},
            "dropped" if status == "Not Started" else "valid",
        )
        if status == "Not Started":
            continue
        first = {"In Progress": A.STARTED_FLOW, "Completed": A.COMPLETED_FLOW, "Skipped": A.STARTED_FLOW}[status]
        b.want(user, flow, first, None, t)
        if status == "Skipped":
            b.want(user, flow, A.SKIPPED_FLOW, None, t, 1)
        reach = steps.index(current)
        for idx in range(reach + 1):
            done = idx < reach or status == "Completed"
            b.want(user, flow, A.COMPLETED_STEP if done else A.STARTED_STEP, steps[idx], t, 20 + idx)
    b.add(dict(b.rows[3]), b.fates[3])  # the same user twice (two overlapping downloads)
    b.add({"User ID": "", "Status": "Completed", "Current Step": "set-alerts", "Last Updated": _iso(T0)}, "quarantined")
    return b, {"flow_constant": flow}


WIDE_FLOWS = {"onboarding": "flow_onboarding", "tour_welcome": "flow_welcome_tour", "announcement": "flow_announcement"}
WIDE_DEFAULT = datetime(2024, 4, 1, tzinfo=UTC)


def build_wide(rng: random.Random) -> tuple[Built, dict[str, Any]]:
    b = Built()
    onboarding, tour = CATALOG["flow_onboarding"], CATALOG["flow_welcome_tour"]
    for i in range(1, 19):
        user = str(5000 + i)
        row: Row = {"id": user, "email": f"person{i}@example.com", "created_at": _iso(T0 - timedelta(days=i))}
        done_on = rng.randint(0, len(onboarding))
        completed = done_on == len(onboarding) and rng.random() < 0.8
        completed_at = T0 + timedelta(days=1, hours=i)
        row["onboarding_completed"] = "true" if completed else "false"
        row["onboarding_completed_at"] = _iso(completed_at) if completed else ""
        intents: list[tuple[Action, str, str | None, datetime]] = []
        # columns in file order: onboarding_completed(_at) first, then steps
        if completed:
            intents.append((A.COMPLETED_FLOW, "flow_onboarding", None, completed_at))
        for n, step in enumerate(onboarding, start=1):
            row[f"onboarding_step_{n}_done"] = "1" if n <= done_on else "0"
            if n <= done_on:
                intents.append((A.COMPLETED_STEP, "flow_onboarding", step, WIDE_DEFAULT))
        tour_done = rng.randint(0, len(tour))
        for n, step in enumerate(tour, start=1):
            row[f"tour_welcome_step_{n}_done"] = "TRUE" if n <= tour_done else ""
            if n <= tour_done:
                intents.append((A.COMPLETED_STEP, "flow_welcome_tour", step, WIDE_DEFAULT))
        lists: dict[str, list[str]] = {"completed_tours": [], "skipped_tours": []}
        pick = rng.random()
        if pick < 0.35:
            lists["completed_tours"].append("announcement")
        elif pick < 0.55:
            lists["skipped_tours"].append("announcement")
        if tour_done < len(tour) and rng.random() < 0.3:
            lists["skipped_tours"].append("tour_welcome")
        for col, names in lists.items():
            row[col] = json.dumps(names) if names else ""
        for name in lists["completed_tours"]:
            intents.append((A.COMPLETED_FLOW, WIDE_FLOWS[name], None, WIDE_DEFAULT))
        for name in lists["skipped_tours"]:
            intents.append((A.SKIPPED_FLOW, WIDE_FLOWS[name], None, WIDE_DEFAULT))
        for seq, (action, slug, step_id, at) in enumerate(intents):
            b.want(user, slug, action, step_id, at, seq)
        fate = "valid" if intents else "dropped"
        b.add(row, fate)
    mapping = {
        "flow_map": dict(WIDE_FLOWS),
        "step_by": "index1",
        "default_time": _iso(WIDE_DEFAULT),
    }
    return b, mapping


ONBOARDING_KEYS = {"connect_data": "connect-data", "invite_team": "invite-team", "first_dashboard": "create-dashboard"}


def build_onboarding_progress(rng: random.Random) -> tuple[Built, dict[str, Any]]:
    """A home-grown table of completions: (user_id, key, completed_at) in local New York time."""
    b = Built()
    ny = ZoneInfo("America/New_York")
    keys = list(ONBOARDING_KEYS)
    for i in range(1, 13):
        user = f"acct-{i:02d}"
        for n, key in enumerate(keys[: rng.randint(1, len(keys))]):
            t = (T0 + timedelta(days=i, minutes=17 * n)).astimezone(ny)
            b.add({"user_id": user, "key": key, "completed_at": t.strftime("%Y-%m-%d %H:%M:%S")})
            b.want(user, "flow_onboarding", A.COMPLETED_STEP, ONBOARDING_KEYS[key], t)
    b.add(dict(b.rows[0]))
    b.add({"user_id": "acct-01", "key": "old_welcome_video", "completed_at": "2024-03-02 10:00:00"}, "quarantined")
    mapping = {
        "flow_constant": "flow_onboarding",
        "step": ["key"],
        "action": [],
        "action_constant": "COMPLETED_STEP",
        "required": ["user", "step", "time"],
        "step_map": {"flow_onboarding": dict(ONBOARDING_KEYS)},
        "time": ["completed_at"],
        "timezone": "America/New_York",
    }
    return b, mapping


TOUR_NAMES = {"welcome": "flow_welcome_tour", "onboarding": "flow_onboarding"}


def build_user_tour_progress(rng: random.Random) -> tuple[Built, dict[str, Any]]:
    """A home-grown state table (user_id, tour, status, current_step, completed_at, skipped_at)."""
    b = Built()
    default = datetime(2024, 4, 15, tzinfo=UTC)
    for i in range(1, 15):
        user = f"member_{i}"
        for tour in sorted(rng.sample(list(TOUR_NAMES), rng.randint(1, 2))):
            flow = TOUR_NAMES[tour]
            steps = CATALOG[flow]
            status = rng.choice(["in_progress", "completed", "skipped", "not_started"])
            k = len(steps) - 1 if status == "completed" else rng.randrange(len(steps))
            t = T0 + timedelta(days=i, minutes=rng.randrange(600))
            b.add(
                {
                    "user_id": user,
                    "tour": tour,
                    "status": status,
                    "current_step": "" if status == "not_started" else str(k + 1),
                    "completed_at": _iso(t) if status == "completed" else "",
                    "skipped_at": _iso(t) if status == "skipped" else "",
                },
                "dropped" if status == "not_started" else "valid",
            )
            at = default if status == "in_progress" else t
            if status == "not_started":
                continue
            if status == "skipped":
                b.want(user, flow, A.STARTED_FLOW, None, at)
                b.want(user, flow, A.SKIPPED_FLOW, None, at, 1)
            else:
                b.want(user, flow, A.COMPLETED_FLOW if status == "completed" else A.STARTED_FLOW, None, at)
            for idx in range(k + 1):
                done = idx < k or status == "completed"
                b.want(user, flow, A.COMPLETED_STEP if done else A.STARTED_STEP, steps[idx], at, 20 + idx)
    mapping = {
        "flow": ["tour"],
        "flow_map": dict(TOUR_NAMES),
        "action": ["status"],
        "action_map": {
            "not_started": "DROP",
            "in_progress": "STARTED_FLOW",
            "completed": "COMPLETED_FLOW",
            "skipped": "STARTED_FLOW+SKIPPED_FLOW",
        },
        "progress_step": ["current_step"],
        "step_by": "index1",
        "time": ["completed_at", "skipped_at"],
        "coalesce": ["time"],
        "default_time": _iso(default),
    }
    return b, mapping


# ---------------------------------------------------------------- writing


def state_dict(state: FlowState) -> dict[str, Any]:
    """One user-flow's state as expected.json writes it."""
    return {
        "started": state.started,
        "completed": state.completed,
        "skipped": state.skipped,
        "current_step_index": state.current_step_index,
        "steps": {
            sid: {"started": s.started, "completed": s.completed, "skipped": s.skipped}
            for sid, s in zip(state.step_ids, state.steps, strict=True)
        },
    }


def expected_state(b: Built, rules: Rules = DEFAULT_RULES) -> dict[str, Any]:
    """Every user-flow's state after the intended actions, with the Frigade rules (``rules``), keyed
    by the ids the sample's catalog uses."""
    by_key: dict[tuple[str, str], list[tuple[datetime, int, int, Action, str | None]]] = {}
    for n, (user, flow, action, step, at, seq) in enumerate(b.intended):
        by_key.setdefault((user, flow), []).append((at, seq, n, action, step))
    users: dict[str, dict[str, Any]] = {}
    for (user, flow), acts in sorted(by_key.items()):
        acts.sort(key=lambda a: (a[0], a[1], a[2]))
        state = replay(CATALOG[flow], [(a[3], a[4], None) for a in acts], rules=rules)
        got = state_dict(state)
        if b.ids:
            vid, steps = b.ids[flow]
            users.setdefault(user, {})[vid] = {**got, "steps": {steps[s]: v for s, v in got["steps"].items()}}
        else:
            users.setdefault(user, {})[flow] = got
    return {
        "rows": len(b.rows),
        "rows_dropped": b.fates.count("dropped"),
        "rows_quarantined": b.fates.count("quarantined"),
        "users": users,
    }


CATALOG_TYPES = {"flow_onboarding": "CHECKLIST", "flow_welcome_tour": "TOUR", "flow_announcement": "ANNOUNCEMENT"}


def vendor_catalog(ids: VendorIds, vendor: str) -> str:
    """The catalog of a vendor sample: the Frigade flows rebuilt from the vendor's, keyed by its ids."""
    flows = [
        {
            "slug": vid,
            "name": f"{flow.removeprefix('flow_').replace('_', ' ').title()} (from {vendor})",
            "type": CATALOG_TYPES[flow],
            "steps": [{"id": steps[s], "title": s.replace("-", " ").capitalize()} for s in CATALOG[flow]],
        }
        for flow, (vid, steps) in ids.items()
    ]
    head = f"# The Frigade flows rebuilt from the {vendor} sample's, keyed by {vendor}'s own flow and step ids.\n"
    return head + yaml.safe_dump({"flows": flows}, sort_keys=False)


def _csv(rows: list[Row], *, bom_crlf: bool = False) -> str:
    columns: list[str] = []
    for r in rows:
        columns += [c for c in r if c not in columns]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\r\n" if bom_crlf else "\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: "" if r.get(c) is None else r.get(c) for c in columns})
    return ("\ufeff" if bom_crlf else "") + buf.getvalue()


def _jsonl(rows: list[Row]) -> str:
    return "".join(json.dumps({k: v for k, v in r.items() if v is not None}) + "\n" for r in rows)


def _gz(text: str) -> bytes:
    # mtime 0 and no file name in the header: the same rows always give the same bytes
    return gzip.compress(text.encode(), mtime=0)


def _shuffle(b: Built, rng: random.Random, share: float) -> None:
    """Move a share of rows elsewhere (late and out-of-order rows), keeping fates aligned."""
    pairs = list(zip(b.rows, b.fates, strict=True))
    moved = [p for p in pairs if rng.random() < share]
    kept = [p for p in pairs if not any(p is m for m in moved)]
    for p in moved:
        kept.insert(rng.randrange(len(kept) + 1), p)
    b.rows, b.fates = [p[0] for p in kept], [p[1] for p in kept]


def _chunks(rows: list[Row], n: int) -> list[list[Row]]:
    size = -(-len(rows) // n)
    return [rows[i : i + size] for i in range(0, len(rows), size)]


Files = dict[str, bytes]


def pendo_response(sample: Sample, rows: list[Row], rng: random.Random) -> Files:
    """One saved Aggregation API response: ``{"startTime": ..., "results": [...]}``, pretty-printed."""
    doc = {"startTime": round(T0.timestamp() * 1000), "results": rows}
    return {sample.export: (json.dumps(doc, indent=2) + "\n").encode()}


def chameleon_pages(sample: Sample, rows: list[Row], rng: random.Random) -> Files:
    """Pages of ``GET /v3/analyze/interactions`` saved one file each: the first pretty, the rest compact."""
    out: Files = {}
    pages = _chunks(rows, 3)
    for n, page in enumerate(pages, start=1):
        cursor = {"limit": 50, "before": page[-1]["id"]} if n < len(pages) else {"limit": 50, "before": None}
        doc = {"interactions": page, "cursor": cursor}
        text = json.dumps(doc, indent=2) if n == 1 else json.dumps(doc, separators=(",", ":"))
        out[f"{sample.export}/interactions-page-{n}.json"] = (text + "\n").encode()
    return out


SEGMENT_SOURCE = "Jq2kT8vWcR"


def segment_logs(sample: Sample, rows: list[Row], rng: random.Random) -> Files:
    """S3 logs: gzipped newline-delimited JSON, segment-logs/<source-id>/<received-day>/<ts>.<uuid>.gz,
    the received day as the UTC midnight's unix time in ms."""
    out: Files = {}
    for batch in _chunks(rows, 4):
        received = max(datetime.fromisoformat(r["receivedAt"].replace("Z", "+00:00")) for r in batch)
        day = int(datetime(received.year, received.month, received.day, tzinfo=UTC).timestamp() * 1000)
        name = f"{sample.export}/{SEGMENT_SOURCE}/{day}/{int(received.timestamp() * 1000)}.{_uuid(rng)}.gz"
        out[name] = _gz(_jsonl(batch))
    return out


#: a row's warehouse table (the container's, not a column)
TABLE = "__table"


def warehouse_tables(sample: Sample, rows: list[Row], rng: random.Random) -> Files:
    """One CSV per event table, as BigQuery exports a table: ``<export>/<table>.csv``."""
    tables: dict[str, list[Row]] = {}
    for row in rows:
        tables.setdefault(row[TABLE], []).append({k: v for k, v in row.items() if k != TABLE})
    return {f"{sample.export}/{name}.csv": _csv(tables[name]).encode() for name in sorted(tables)}


def amplitude_zip(sample: Sample, rows: list[Row], rng: random.Random) -> Files:
    """Export API: a zip holding one gzipped JSON-lines file per hour, ``<project>/<project>_<date>_<hour>#0.json.gz``
    (the hour of upload: server_upload_time)."""
    hours: dict[str, list[Row]] = {}
    for row in rows:
        t = datetime.strptime(row["server_upload_time"], "%Y-%m-%d %H:%M:%S.%f")
        hours.setdefault(f"{AMPLITUDE_PROJECT}/{AMPLITUDE_PROJECT}_{t:%Y-%m-%d}_{t.hour}#0.json.gz", []).append(row)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(hours):
            zf.writestr(zipfile.ZipInfo(name, date_time=(2024, 3, 15, 0, 0, 0)), _gz(_jsonl(hours[name])))
    return {sample.export: buf.getvalue()}


def jsonl_gz(sample: Sample, rows: list[Row], rng: random.Random) -> Files:
    return {sample.export: _gz(_jsonl(rows))}


def csv_bom_crlf(sample: Sample, rows: list[Row], rng: random.Random) -> Files:
    """A CSV as spreadsheet tools save it: a UTF-8 byte order mark and CRLF line ends."""
    return {sample.export: _csv(rows, bom_crlf=True).encode()}


CONTAINERS: dict[str, Callable[[Sample, list[Row], random.Random], Files]] = {
    "pendo-response": pendo_response,
    "chameleon-pages": chameleon_pages,
    "segment-logs": segment_logs,
    "warehouse-tables": warehouse_tables,
    "amplitude-zip": amplitude_zip,
    "jsonl.gz": jsonl_gz,
    "csv-bom-crlf": csv_bom_crlf,
}


Builder = Callable[[random.Random], "Built | tuple[Built, dict[str, Any]]"]

VENDOR_CATALOG = "catalog.yaml"

SAMPLES: tuple[Sample, ...] = (
    Sample("long", "long", "events.csv"),
    Sample("appcues", "appcues", "appcues-events.csv", container="csv-bom-crlf", catalog=VENDOR_CATALOG),
    Sample("userflow", "userflow", "events.jsonl", catalog=VENDOR_CATALOG),
    Sample("userflow", "userflow/webhooks", "webhook-deliveries.jsonl", catalog="../" + VENDOR_CATALOG),
    Sample("pendo", "pendo", "guide-events.json", container="pendo-response", catalog=VENDOR_CATALOG),
    Sample("chameleon", "chameleon", "interactions", container="chameleon-pages", catalog=VENDOR_CATALOG),
    Sample("userpilot", "userpilot", "userpilot-events.csv", catalog=VENDOR_CATALOG),
    Sample("segment", "segment", "segment-logs", container="segment-logs"),
    Sample("segment", "segment/warehouse", "tables", container="warehouse-tables"),
    Sample("mixpanel", "mixpanel", "export.jsonl.gz", container="jsonl.gz"),
    Sample("amplitude", "amplitude", "amplitude-export.zip", container="amplitude-zip"),
    Sample("frigade-csv", "frigade-csv", "flow_onboarding-users.csv", "mapping.yaml"),
    Sample("wide", "wide", "users.csv", "mapping.yaml"),
    Sample("long", "long/onboarding_progress", "onboarding_progress.csv", "mapping.yaml"),
    Sample("long", "long/user_tour_progress", "user_tour_progress.csv", "mapping.yaml"),
)

BUILDERS: dict[str, Builder] = {
    "long": build_long,
    "appcues": build_appcues,
    "userflow": build_userflow,
    "userflow/webhooks": build_userflow_webhooks,
    "pendo": build_pendo,
    "chameleon": build_chameleon,
    "userpilot": build_userpilot,
    "segment": build_segment,
    "segment/warehouse": build_segment_warehouse,
    "mixpanel": build_mixpanel,
    "amplitude": build_amplitude,
    "frigade-csv": build_frigade_csv,
    "wide": build_wide,
    "long/onboarding_progress": build_onboarding_progress,
    "long/user_tour_progress": build_user_tour_progress,
}


def expected_under(sample: Sample, rules: Rules, seed: int = SEED) -> dict[str, Any]:
    """What expected.json would say if Frigade played ``rules``."""
    return cast(dict[str, Any], json.loads(render(sample, seed, rules)["expected.json"]))


def render(sample: Sample, seed: int = SEED, rules: Rules = DEFAULT_RULES) -> Files:
    """The files of one sample (path relative to its folder -> bytes)."""
    rng = random.Random(f"{seed}:{sample.folder}")
    built = BUILDERS[sample.folder](rng)
    b, mapping = built if isinstance(built, tuple) else (built, None)
    if sample.preset != "wide":
        _shuffle(b, rng, 0.15)
    if sample.container:
        files = CONTAINERS[sample.container](sample, b.rows, rng)
    else:
        text = _jsonl(b.rows) if sample.export.endswith(".jsonl") else _csv(b.rows)
        files = {sample.export: text.encode()}
    files["expected.json"] = (json.dumps(expected_state(b, rules), indent=1) + "\n").encode()
    if sample.mapping:
        assert mapping is not None
        files[sample.mapping] = yaml.safe_dump(mapping, sort_keys=False).encode()
    if b.ids and sample.catalog == VENDOR_CATALOG:
        files[VENDOR_CATALOG] = vendor_catalog(b.ids, sample.preset.capitalize()).encode()
    return files


def write_all(data: Path, seed: int = SEED) -> list[Path]:
    """Write every sample under ``data`` (sample folders only; the shared catalog is left alone)."""
    written = []
    for sample in SAMPLES:
        folder = data / sample.folder
        for name, blob in render(sample, seed).items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob)
            written.append(path)
    return written
