"""Deterministic sample exports, one per preset, generated from a known per-user target.

For every user and flow the generator draws a journey (progress to step k, complete, or skip at step
k), renders it in the tool's own vocabulary and field names, and writes down the Frigade actions the
tool's documented mapping means (``transforms/presets/README.md``). The expected state is those actions replayed
with ``frigade.rules`` -- independently of the mapping code under test. Messy rows (duplicates,
out-of-order and late rows, non-state events, rows that must be quarantined) are added with their known
fate, so the row accounting can be checked too.

``data/make_samples.py`` writes them under ``data/``; the tests regenerate them and compare.
"""

from __future__ import annotations

import csv
import io
import json
import random
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


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample export: its folder under data/, file name, preset and optional mapping file."""

    preset: str
    folder: str
    export: str
    mapping: str | None = None

    def path(self, data: Path) -> Path:
        return data / self.folder / self.export

    def mapping_path(self, data: Path) -> Path | None:
        return data / self.folder / self.mapping if self.mapping else None

    def expected_path(self, data: Path) -> Path:
        return data / self.folder / "expected.json"


@dataclass(frozen=True, slots=True)
class Journey:
    kind: str  # progress | complete | skip
    k: int = 0  # the step reached (progress, skip)


@dataclass(slots=True)
class Built:
    """Rows of one export, each row's fate (valid | dropped | quarantined), and the intended actions."""

    rows: list[Row] = field(default_factory=list)
    fates: list[str] = field(default_factory=list)
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
    # quarantined, each for its own reason
    b.add(_long_row("user_04", "flow_old_checklist", "STARTED_FLOW", None, T0), "quarantined")
    b.add(_long_row("user_06", "flow_legacy_survey", "COMPLETED_STEP", "score", T0), "quarantined")
    b.add(_long_row("user_07", "flow_onboarding", "COMPLETED_STEP", "billing-setup", T0), "quarantined")
    b.add(_long_row("", "flow_onboarding", "STARTED_FLOW", None, T0), "quarantined")
    b.add(_long_row("user_08", "flow_onboarding", "FINISHED_FLOW", None, T0), "quarantined")
    b.add(_long_row("user_09", "flow_welcome_tour", "COMPLETED_STEP", None, T0), "quarantined")
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


APPCUES_FLOWS = {"flow_welcome_tour": "-MtW3lcQ9aT", "flow_announcement": "-Nb0rX2pPzq"}
APPCUES_CHECKLIST = {"flow_onboarding": "8f0c3a1e-2d4b"}


def build_appcues(rng: random.Random) -> tuple[Built, dict[str, Any]]:
    b = Built()
    step_ids = {f: {s: _uid(rng, 8) for s in steps} for f, steps in CATALOG.items()}
    names = {
        A.STARTED_FLOW: "flow_started",
        A.STARTED_STEP: "step_started",
        A.COMPLETED_STEP: "step_completed",
        A.COMPLETED_FLOW: "flow_completed",
        A.SKIPPED_FLOW: "flow_skipped",
    }
    checklist = {
        A.STARTED_FLOW: "checklist_shown",
        A.COMPLETED_STEP: "checklist_item_completed",
        A.COMPLETED_FLOW: "checklist_completed",
        A.SKIPPED_FLOW: "checklist_skipped",
    }
    users = [f"ac-{i:03d}" for i in range(1, 11)]
    for user, flow, j, start in draw_journeys(rng, users):
        is_checklist = flow in APPCUES_CHECKLIST
        acts = generic_actions(flow, j)
        if is_checklist:  # checklists have no item-started event
            acts = [a for a in acts if a[0] is not A.STARTED_STEP]
        for (action, step), t in zip(acts, _times(start, len(acts), rng), strict=True):
            name = (checklist if is_checklist else names)[action]
            prefix = rng.choice(["", "appcues:", "appcues:v2:"])
            epoch = rng.random() < 0.25
            row = {
                "timestamp": str(round(t.timestamp() * 1000)) if epoch else _iso(t),
                "name": prefix + name,
                "user_id": user,
                "account_id": "acct_1",
                "flowId": "" if is_checklist else APPCUES_FLOWS[flow],
                "stepId": "" if is_checklist or step is None else step_ids[flow][step],
                "checklistId": APPCUES_CHECKLIST[flow] if is_checklist else "",
                "itemId": step_ids[flow][step] if is_checklist and step else "",
            }
            b.add(row)
            b.want(user, flow, action, step, t)
            if action is A.STARTED_STEP and rng.random() < 0.3:
                b.add({**row, "name": prefix + "step_interacted"}, "dropped")
    tour = APPCUES_FLOWS["flow_welcome_tour"]
    extra = {"timestamp": _iso(T0), "user_id": "ac-001", "account_id": "", "checklistId": "", "itemId": ""}
    b.add({**extra, "name": "appcues:flow_aborted", "flowId": tour, "stepId": ""}, "dropped")
    b.add({**extra, "name": "appcues:v2:step_child_activated", "flowId": tour, "stepId": ""}, "dropped")
    b.add({**extra, "name": "flow_error", "flowId": tour, "stepId": ""}, "dropped")
    b.add({**extra, "name": "flow_started", "flowId": "-OldFlow1234", "stepId": ""}, "quarantined")
    b.add({**extra, "name": "appcues:flow_restarted", "flowId": tour, "stepId": ""}, "quarantined")
    mapping = {
        "flow_map": {v: k for k, v in {**APPCUES_FLOWS, **APPCUES_CHECKLIST}.items()},
        "step_map": {f: {v: k for k, v in ids.items()} for f, ids in step_ids.items()},
    }
    return b, mapping


def build_userflow(rng: random.Random) -> Built:
    b = Built()
    users = [f"uf_{i}" for i in range(101, 111)]
    for user, flow, j, start in draw_journeys(rng, users):
        steps = CATALOG[flow]
        seen = len(steps) if j.kind == "complete" else j.k + 1
        events: list[tuple[str, str | None]] = [("flow_started", None)]
        events += [("flow_step_seen", steps[i]) for i in range(seen)]
        if j.kind == "complete":
            events += [("flow_completed", steps[-1]), ("flow_ended", steps[-1])]
        elif j.kind == "skip":
            events.append(("flow_ended", steps[j.k]))
        for (name, step), t in zip(events, _times(start, len(events), rng), strict=True):
            row = {
                "id": _uid(rng, 16),
                "name": name,
                "user_id": user,
                "flow_id": flow,
                "flow_step_id": step or "",
                "flow_step_number": str(steps.index(step)) if step else "",
                "time": _iso(t),
            }
            fate = "valid"
            if name == "flow_started":
                b.want(user, flow, A.STARTED_FLOW, None, t)
            elif name == "flow_step_seen":
                assert step is not None
                b.want(user, flow, A.STARTED_STEP, step, t)
                idx = steps.index(step)
                if idx > 0:
                    b.want(user, flow, A.COMPLETED_STEP, steps[idx - 1], t, 1)
            elif name == "flow_completed":
                b.want(user, flow, A.COMPLETED_FLOW, None, t)
                b.want(user, flow, A.COMPLETED_STEP, steps[-1], t, 1)
            elif j.kind == "complete":
                fate = "dropped"  # flow_ended after flow_completed is the same ending
            else:
                b.want(user, flow, A.SKIPPED_FLOW, None, t)
            b.add(row, fate)
            if name == "flow_step_seen" and rng.random() < 0.2:
                b.add({**row, "id": _uid(rng, 16), "name": "flow_step_clicked"}, "dropped")
    b.add(
        {
            "id": _uid(rng, 16),
            "name": "flow_started",
            "user_id": "uf_101",
            "flow_id": "flow_trial_nudge",
            "flow_step_id": "",
            "flow_step_number": "",
            "time": _iso(T0),
        },
        "quarantined",
    )
    return b


def build_pendo(rng: random.Random) -> tuple[Built, dict[str, Any]]:
    b = Built()
    guides = {f: _uid(rng, 22) for f in CATALOG}
    gsteps = {f: {s: _uid(rng, 22) for s in steps} for f, steps in CATALOG.items()}
    users = [f"visitor-{i}" for i in range(1, 11)]
    for user, flow, j, start in draw_journeys(rng, users):
        steps = CATALOG[flow]
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
                    "visitor_id": user,
                    "account_id": "acme",
                    "guide_id": guides[flow],
                    "guide_step_id": gsteps[flow][step],
                    "type": kind,
                    "timestamp": str(round(t.timestamp() * 1000)),
                    "url": "https://app.example.com/home",
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
    b.add(
        {
            "visitor_id": "visitor-1",
            "account_id": "acme",
            "guide_id": _uid(rng, 22),
            "guide_step_id": _uid(rng, 22),
            "type": "guideSeen",
            "timestamp": str(round(T0.timestamp() * 1000)),
            "url": "",
        },
        "quarantined",
    )
    mapping = {
        "flow_map": {v: k for k, v in guides.items()},
        "step_map": {f: {v: k for k, v in ids.items()} for f, ids in gsteps.items()},
    }
    return b, mapping


CHAMELEON_TOURS = {f: _uid(random.Random(f), 24) for f in CATALOG}


def build_chameleon(rng: random.Random) -> tuple[Built, dict[str, Any]]:
    b = Built()
    users = [f"5f{i:03d}c" for i in range(1, 15)]
    for user, flow, _j, start in draw_journeys(rng, users):
        state = rng.choice(["started", "displayed", "completed", "completed", "exited"])
        updated = start + timedelta(minutes=rng.randint(1, 90))
        b.add(
            {
                "id": _uid(rng, 24),
                "profile.uid": user,
                "tour_id": CHAMELEON_TOURS[flow],
                "state": state,
                "created_at": _iso(start),
                "updated_at": _iso(updated),
            }
        )
        if state == "completed":
            b.want(user, flow, A.COMPLETED_FLOW, None, updated)
        elif state == "exited":
            b.want(user, flow, A.STARTED_FLOW, None, updated)
            b.want(user, flow, A.SKIPPED_FLOW, None, updated, 1)
        else:
            b.want(user, flow, A.STARTED_FLOW, None, updated)
    b.add(dict(b.rows[2]))  # an overlapping export window repeats a row
    b.add({**b.rows[0], "id": _uid(rng, 24), "profile.uid": ""}, "quarantined")
    b.add({**b.rows[1], "id": _uid(rng, 24), "tour_id": _uid(rng, 24)}, "quarantined")
    mapping = {"flow_map": {v: k for k, v in CHAMELEON_TOURS.items()}}
    return b, mapping


USERPILOT_IDS = {"flow_onboarding": "10231", "flow_welcome_tour": "10544", "flow_announcement": "11002"}


def build_userpilot(rng: random.Random) -> tuple[Built, dict[str, Any]]:
    b = Built()
    users = [f"up{i:04d}" for i in range(1, 11)]
    for user, flow, j, start in draw_journeys(rng, users):
        cid = USERPILOT_IDS[flow]
        steps = CATALOG[flow]
        status = {
            A.STARTED_FLOW: "flow:{c}:SEEN",
            A.STARTED_STEP: "step:{c}:{n}:SEEN",
            A.COMPLETED_STEP: "step:{c}:{n}:COMPLETED",
            A.COMPLETED_FLOW: "flow:{c}:COMPLETED",
            A.SKIPPED_FLOW: "flow:{c}:DISMISSED",
        }
        acts = generic_actions(flow, j)
        for (action, step), t in zip(acts, _times(start, len(acts), rng), strict=True):
            n = steps.index(step) + 1 if step else 0
            b.add(
                {
                    "user_id": user,
                    "company_id": "c-77",
                    "event_name": status[action].format(c=cid, n=n),
                    "inserted_at": t.strftime("%Y-%m-%d %H:%M:%S.%f"),
                }
            )
            b.want(user, flow, action, step, t)
    at = T0.strftime("%Y-%m-%d %H:%M:%S.%f")
    b.add({"user_id": "up0001", "company_id": "", "event_name": "survey:553:SEEN", "inserted_at": at}, "dropped")
    b.add({"user_id": "up0002", "company_id": "", "event_name": "nps:12:DISMISSED", "inserted_at": at}, "dropped")
    b.add({"user_id": "up0003", "company_id": "", "event_name": "flow:99999:SEEN", "inserted_at": at}, "quarantined")
    b.add({"user_id": "up0003", "company_id": "", "event_name": "flow:10231:HOVERED", "inserted_at": at}, "quarantined")
    mapping = {"flow_map": {v: k for k, v in USERPILOT_IDS.items()}, "step_by": "index1"}
    return b, mapping


ANALYTICS_NAMES = {
    A.STARTED_FLOW: "Flow Started",
    A.STARTED_STEP: "Step Viewed",
    A.COMPLETED_STEP: "Step Completed",
    A.COMPLETED_FLOW: "Flow Completed",
    A.SKIPPED_FLOW: "Flow Dismissed",
}


def _tracked(rng: random.Random, users: list[str]) -> Iterator[tuple[str, str, Action, str | None, datetime, Row]]:
    """Each drawn journey's events, the flow and step as event properties (Segment's and Amplitude's
    shape). A generator, so that the caller's own draws for each event come between this one's, in
    the order the committed samples were drawn in."""
    for user, flow, j, start in draw_journeys(rng, users):
        acts = generic_actions(flow, j)
        for (action, step), t in zip(acts, _times(start, len(acts), rng), strict=True):
            props: Row = {"flow_id": flow}
            if step:
                props["step_id"] = step
            yield user, flow, action, step, t, props


def build_segment(rng: random.Random) -> Built:
    b = Built()
    for user, flow, action, step, t, props in _tracked(rng, [f"usr_{i:03d}" for i in range(1, 11)]):
        row = {
            "type": "track",
            "event": ANALYTICS_NAMES[action],
            "userId": user,
            "anonymousId": _uid(rng, 10),
            "properties": props,
            "timestamp": _iso(t),
            "messageId": f"ajs-{_uid(rng, 20)}",
        }
        b.add(row)
        b.want(user, flow, action, step, t)
        if rng.random() < 0.1:
            b.add(dict(row))  # a retried delivery: same messageId
    anon = _uid(rng, 10)
    base = {"anonymousId": anon, "timestamp": _iso(T0), "messageId": "", "properties": {"flow_id": "x"}}
    b.add({**base, "type": "identify", "userId": "usr_001", "messageId": "ajs-id-1"}, "dropped")
    b.add({**base, "type": "page", "userId": "usr_002", "messageId": "ajs-pg-1"}, "dropped")
    b.add({**base, "type": "track", "event": "Signed Up", "userId": "usr_003", "messageId": "ajs-su"}, "dropped")
    anon_row = {"type": "track", "event": "Flow Started", "userId": None, "messageId": "ajs-anon"}
    b.add({**base, **anon_row, "properties": {"flow_id": "flow_onboarding"}}, "quarantined")
    return b


def build_mixpanel(rng: random.Random) -> Built:
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


def build_amplitude(rng: random.Random) -> Built:
    b = Built()
    for user, flow, action, step, t, props in _tracked(rng, [f"amp-user-{i}" for i in range(1, 11)]):
        row = {
            "event_type": ANALYTICS_NAMES[action],
            "user_id": user,
            "device_id": _uid(rng, 12),
            "event_time": t.strftime("%Y-%m-%d %H:%M:%S.%f"),
            "event_properties": props,
            "$insert_id": _uid(rng, 20),
            "uuid": _uid(rng, 32),
        }
        b.add(row)
        b.want(user, flow, action, step, t)
        if rng.random() < 0.1:
            b.add(dict(row))
    at = T0.strftime("%Y-%m-%d %H:%M:%S.%f")
    base = {"device_id": "dev", "event_time": at, "uuid": "", "event_properties": {"flow_id": "flow_onboarding"}}
    b.add({**base, "event_type": "session_start", "user_id": "amp-user-1", "$insert_id": "s1"}, "dropped")
    b.add({**base, "event_type": "Flow Started", "user_id": None, "$insert_id": "anon1"}, "quarantined")
    return b


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
    """Every user-flow's state after the intended actions, with the Frigade rules (``rules``)."""
    by_key: dict[tuple[str, str], list[tuple[datetime, int, int, Action, str | None]]] = {}
    for n, (user, flow, action, step, at, seq) in enumerate(b.intended):
        by_key.setdefault((user, flow), []).append((at, seq, n, action, step))
    users: dict[str, dict[str, Any]] = {}
    for (user, flow), acts in sorted(by_key.items()):
        acts.sort(key=lambda a: (a[0], a[1], a[2]))
        state = replay(CATALOG[flow], [(a[3], a[4], None) for a in acts], rules=rules)
        users.setdefault(user, {})[flow] = state_dict(state)
    return {
        "rows": len(b.rows),
        "rows_dropped": b.fates.count("dropped"),
        "rows_quarantined": b.fates.count("quarantined"),
        "users": users,
    }


def _csv(rows: list[Row]) -> str:
    columns: list[str] = []
    for r in rows:
        columns += [c for c in r if c not in columns]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: "" if r.get(c) is None else r.get(c) for c in columns})
    return buf.getvalue()


def _jsonl(rows: list[Row]) -> str:
    return "".join(json.dumps({k: v for k, v in r.items() if v is not None}) + "\n" for r in rows)


def _shuffle(b: Built, rng: random.Random, share: float) -> None:
    """Move a share of rows elsewhere (late and out-of-order rows), keeping fates aligned."""
    pairs = list(zip(b.rows, b.fates, strict=True))
    moved = [p for p in pairs if rng.random() < share]
    kept = [p for p in pairs if not any(p is m for m in moved)]
    for p in moved:
        kept.insert(rng.randrange(len(kept) + 1), p)
    b.rows, b.fates = [p[0] for p in kept], [p[1] for p in kept]


Builder = Callable[[random.Random], "Built | tuple[Built, dict[str, Any]]"]

SAMPLES: tuple[Sample, ...] = (
    Sample("long", "long", "events.csv"),
    Sample("appcues", "appcues", "appcues-events.csv", "mapping.yaml"),
    Sample("userflow", "userflow", "userflow-events.csv"),
    Sample("pendo", "pendo", "guide-events.csv", "mapping.yaml"),
    Sample("chameleon", "chameleon", "tour-interactions.csv", "mapping.yaml"),
    Sample("userpilot", "userpilot", "userpilot-export.csv", "mapping.yaml"),
    Sample("segment", "segment", "tracks.jsonl"),
    Sample("mixpanel", "mixpanel", "export.jsonl"),
    Sample("amplitude", "amplitude", "export.jsonl"),
    Sample("frigade-csv", "frigade-csv", "flow_onboarding-users.csv", "mapping.yaml"),
    Sample("wide", "wide", "users.csv", "mapping.yaml"),
    Sample("long", "long/onboarding_progress", "onboarding_progress.csv", "mapping.yaml"),
    Sample("long", "long/user_tour_progress", "user_tour_progress.csv", "mapping.yaml"),
)

BUILDERS: dict[str, Builder] = {
    "long": build_long,
    "appcues": build_appcues,
    "userflow": build_userflow,
    "pendo": build_pendo,
    "chameleon": build_chameleon,
    "userpilot": build_userpilot,
    "segment": build_segment,
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


def render(sample: Sample, seed: int = SEED, rules: Rules = DEFAULT_RULES) -> dict[str, str]:
    """The files of one sample (name relative to its folder -> text)."""
    rng = random.Random(f"{seed}:{sample.folder}")
    built = BUILDERS[sample.folder](rng)
    b, mapping = built if isinstance(built, tuple) else (built, None)
    if sample.preset != "wide":
        _shuffle(b, rng, 0.15)
    text = _jsonl(b.rows) if sample.export.endswith(".jsonl") else _csv(b.rows)
    files = {sample.export: text, "expected.json": json.dumps(expected_state(b, rules), indent=1) + "\n"}
    if sample.mapping:
        assert mapping is not None
        files[sample.mapping] = yaml.safe_dump(mapping, sort_keys=False)
    return files


def write_all(data: Path, seed: int = SEED) -> list[Path]:
    """Write every sample under ``data`` (sample folders only; the catalog is left alone)."""
    written = []
    for sample in SAMPLES:
        folder = data / sample.folder
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in render(sample, seed).items():
            path = folder / name
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written
