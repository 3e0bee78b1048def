"""The probe, over HTTP to a real emulator process playing each profile, detects that profile."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from emulator.embedded import EmbeddedEmulator
from frigade.client import FrigadeClient
from frigade.probe import PROBE_PREFIX, ProbeAnswers, ProbeError, ProbeResult, interpret, probe, probe_user_id
from frigade.rules import DEFAULT_RULES, PROFILES, SETTINGS, Rules
from frigade.secret import ApiKey


def _flipped(name: str) -> Rules:
    """The default profile with one setting the other way."""
    value = getattr(DEFAULT_RULES, name)
    other: Any = (0 if value == -1 else -1) if name == "not_started_index" else not value
    return replace(DEFAULT_RULES, name=f"flip-{name}", **{name: other})


CASES = [*PROFILES.values(), *(_flipped(n) for n in SETTINGS)]


async def _probe(emu: EmbeddedEmulator, user: str, flow: str = "flow_onboarding") -> ProbeResult:
    async with FrigadeClient(emu.url, ApiKey(emu.public_key), rate=50) as client:
        return await probe(client, flow, user)


@pytest.mark.parametrize("rules", CASES, ids=[r.name for r in CASES])
def test_probe_detects_the_profile_the_server_plays(rules: Rules) -> None:
    with EmbeddedEmulator(rules=rules) as emu:
        user = probe_user_id()
        result = asyncio.run(_probe(emu, user))
        assert result.rules.settings() == rules.settings()
        assert result.rules.name == (rules.name if rules.name in PROFILES else "probed")
        assert result.requests == 5
        assert emu.stats()["requests_total"] == 5
        assert emu.stats()["writes_unchanged"] == 0
        # the probe user is left reset
        assert [h["actionType"] for h in emu.history(user)][-1] == "NOT_STARTED_FLOW"


def test_probe_users_are_easy_to_find() -> None:
    assert probe_user_id().startswith(PROBE_PREFIX)
    assert probe_user_id() != probe_user_id()


def test_probe_needs_a_flow_of_two_steps_and_sends_nothing_otherwise() -> None:
    with EmbeddedEmulator() as emu:
        with pytest.raises(ProbeError, match="at least two"):
            asyncio.run(_probe(emu, probe_user_id(), "flow_announcement"))
        assert emu.stats()["writes_accepted"] == 0


def test_an_index_no_profile_has_is_an_error() -> None:
    answers = ProbeAnswers(3, True, None, None, False)
    with pytest.raises(ProbeError, match="currentStepIndex 3"):
        interpret(answers)
