"""Many writers at once: nothing lost, nothing mixed up between users, each user's state exact."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest

from emulator.embedded import EmbeddedEmulator
from frigade.models import UserFlowStates, flow_state_from_wire
from frigade.rules import Action, replay
from tests.emulator._http import FLOW, STATES, STEPS, read, state_of, write_body

pytestmark = pytest.mark.slow

USERS = 50
WRITES = 20


def _sequence(rng: random.Random) -> list[tuple[Action, str | None, str]]:
    out: list[tuple[Action, str | None, str]] = []
    for i in range(WRITES):
        action = rng.choice(list(Action))
        out.append((action, rng.choice(STEPS) if action.is_step else None, f"2024-02-01T00:{i:02d}:00Z"))
    return out


async def _send_all(emu: EmbeddedEmulator, plans: dict[str, list[tuple[Action, str | None, str]]]) -> None:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(
        base_url=emu.url, headers=emu.headers(private=False), limits=limits, timeout=30.0
    ) as client:

        async def user_writes(user: str) -> None:
            for action, step, at in plans[user]:  # one user's writes in order; users interleave freely
                answer = await client.post(STATES, json=write_body(user, action, step, at=at))
                assert answer.status_code == 201, answer.text

        await asyncio.gather(*(user_writes(u) for u in plans))


def test_concurrent_writers_for_many_users_lose_nothing(emu: EmbeddedEmulator, client: httpx.Client) -> None:
    rng = random.Random(7)
    plans = {f"user-{n:02d}": _sequence(rng) for n in range(USERS)}
    asyncio.run(_send_all(emu, plans))

    stats = emu.stats()
    assert stats["writes_accepted"] == USERS * WRITES
    assert stats["history_rows"] == USERS * WRITES
    assert stats["distinct_users"] == USERS
    assert stats["requests_by_status"] == {"201": USERS * WRITES}
    for user, plan in plans.items():
        history = emu.history(user)
        assert [(h["actionType"], h["stepId"], h["createdAt"]) for h in history] == [
            (a.value, s, t) for a, s, t in plan
        ]
        assert state_of(read(client, user)) == replay(STEPS, plan)


def test_concurrent_writes_for_one_user_apply_atomically_in_arrival_order(
    emu: EmbeddedEmulator, client: httpx.Client
) -> None:
    rng = random.Random(11)
    plan = [(a, s, f"2024-02-01T00:00:{i:02d}Z") for i, (a, s, _) in enumerate(_sequence(rng))]

    async def fire() -> None:
        async with httpx.AsyncClient(base_url=emu.url, headers=emu.headers(private=False)) as c:
            answers = await asyncio.gather(*(c.post(STATES, json=write_body("same", a, s, at=t)) for a, s, t in plan))
        for answer in answers:
            UserFlowStates.model_validate(answer.json())

    asyncio.run(fire())
    history = emu.history("same")
    assert len(history) == len(plan)
    applied = [(Action(h["actionType"]), h["stepId"], h["createdAt"]) for h in history]
    final = read(client, "same").flow(FLOW)
    assert final is not None
    assert flow_state_from_wire(final) == replay(STEPS, applied)
