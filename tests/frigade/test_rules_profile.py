"""Rules profiles: what each setting changes, how profiles load, and how a differing one is named."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from frigade.rules import (
    DEFAULT_RULES,
    PROFILES,
    Action,
    ProfileError,
    apply,
    differing_settings,
    initial_state,
    load_rules,
    replay,
)

STEPS = ("a", "b", "c")
SDK, LEGACY = PROFILES["sdk"], PROFILES["legacy"]


def test_the_default_is_what_the_sdk_shows() -> None:
    assert DEFAULT_RULES is SDK
    assert SDK.start_next_step
    assert SDK.not_started_index == -1
    assert not SDK.last_step_completes_flow


def test_completing_or_skipping_a_step_starts_the_next_one_under_sdk_only() -> None:
    for action in (Action.COMPLETED_STEP, Action.SKIPPED_STEP):
        sdk = replay(STEPS, [(action, "a", None)], rules=SDK)
        legacy = replay(STEPS, [(action, "a", None)], rules=LEGACY)
        assert sdk.step("b").started
        assert not legacy.step("b").started
        assert sdk.current_step_index == legacy.current_step_index == 1
        assert not sdk.step("c").started


def test_the_unconfirmed_points_are_settings() -> None:
    zero = replace(SDK, not_started_index=0)
    assert initial_state(STEPS, zero).current_step_index == 0
    assert replay(STEPS, [(Action.NOT_STARTED_FLOW, None, None)], rules=zero).current_step_index == 0
    done = replay(STEPS, [(Action.COMPLETED_STEP, "c", "2024-01-01T00:00:00Z")], rules=SDK)
    assert not done.completed
    assert replay(
        STEPS, [(Action.COMPLETED_STEP, "c", None)], rules=replace(SDK, last_step_completes_flow=True)
    ).completed
    acts = [(Action.COMPLETED_STEP, "a", "t1"), (Action.NOT_STARTED_STEP, "a", "t2")]
    assert replay(STEPS, acts, rules=SDK).step("a").last_action_at is None
    assert replay(STEPS, acts, rules=LEGACY).step("a").last_action_at == "t2"


def test_profiles_load_by_name_or_from_a_file(tmp_path: Path) -> None:
    assert load_rules(None) is SDK
    assert load_rules("legacy") is LEGACY
    f = tmp_path / "rules.json"
    f.write_text(replace(LEGACY, name="probed").to_json())
    assert load_rules(str(f)).settings() == LEGACY.settings()
    y = tmp_path / "rules.yaml"
    y.write_text("start_next_step: false\nnot_started_index: 0\n")
    got = load_rules(str(y))
    assert (got.name, got.start_next_step, got.not_started_index, got.honours_created_at) == ("custom", False, 0, True)
    assert got.named() is got
    assert replace(got, not_started_index=-1, nss_clears_last_action=False).named() is LEGACY


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("start_next_stp: true\n", "unknown rules setting"),
        ("start_next_step: 'yes'\n", "must be bool"),
        ("not_started_index: 2\n", "-1 or 0"),
        ("- a\n", "mapping"),
    ],
)
def test_a_bad_rules_file_says_why(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text(text)
    with pytest.raises(ProfileError, match=message):
        load_rules(str(f))


def test_a_name_that_is_neither_profile_nor_file() -> None:
    with pytest.raises(ProfileError, match="neither a profile"):
        load_rules("sdkk")


def test_the_differing_setting_is_named() -> None:
    before = initial_state(STEPS, LEGACY)
    got = apply(before, Action.COMPLETED_STEP, "a", None, SDK)
    assert differing_settings(before, Action.COMPLETED_STEP, "a", got, LEGACY) == ["start_next_step"]
    done = apply(initial_state(STEPS), Action.COMPLETED_STEP, "c", None, replace(SDK, last_step_completes_flow=True))
    assert differing_settings(initial_state(STEPS), Action.COMPLETED_STEP, "c", done, SDK) == [
        "last_step_completes_flow"
    ]
    weird = replace(got, skipped=True)
    assert differing_settings(before, Action.COMPLETED_STEP, "a", weird, LEGACY) == []
