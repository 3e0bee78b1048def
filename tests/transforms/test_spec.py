"""transforms.spec: the mapping's fields, their checks, and mappings built from YAML-shaped data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from transforms.schema import InputError
from transforms.spec import SourceMapping, WideRule, check_timezone, mapping_from_dict


def test_yaml_shaped_values_become_the_fields_types_over_a_base() -> None:
    doc: dict[str, Any] = {
        "user": "uid",
        "time": ["ts", "at"],
        "action_map": {"a": ["STARTED_FLOW", "COMPLETED_FLOW"], "b": " SKIPPED_FLOW + COMPLETED_FLOW ", "c": "DROP"},
        "flow_map": {1: 2},
        "step_map": {"f": {"1": "welcome"}},
        "timezone": None,
        "trim_user_ids": True,
        "wide": [{"columns": "^(?P<flow>.+)_done$", "action": "COMPLETED_FLOW"}],
    }
    m = mapping_from_dict(doc, base=SourceMapping(name="preset", strip_prefixes=("x_",), timezone="UTC"))
    assert m.user == ("uid",)
    assert m.time == ("ts", "at")
    assert m.action_map == {"a": "STARTED_FLOW+COMPLETED_FLOW", "b": "SKIPPED_FLOW+COMPLETED_FLOW", "c": "DROP"}
    assert m.flow_map == {"1": "2"}
    assert m.step_map == {"f": {"1": "welcome"}}
    assert m.timezone is None
    assert m.trim_user_ids is True
    assert m.wide == (WideRule("^(?P<flow>.+)_done$", "COMPLETED_FLOW"),)
    # what the document does not name comes from the base
    assert (m.name, m.strip_prefixes, m.flow) == ("preset", ("x_",), SourceMapping().flow)


def test_an_empty_list_clears_a_tuple_field() -> None:
    assert mapping_from_dict({"required": None, "coalesce": []}).required == ()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"usr": "x"}, "unknown key 'usr'; did you mean 'user'\\?"),
        ({"colour": "x", "usr": 1}, "unknown key 'colour' .and 'usr'.; known keys: action, "),
        ({"trim_user_ids": "yes"}, "trim_user_ids must be true or false"),
        ({"action_map": ["a"]}, "expected a mapping of event name to action"),
        ({"action_map": {"x": "FINISHED"}}, "action_map maps to unknown actions: FINISHED"),
        ({"entity_action_map": {"flow": {"x": "STARTED_FLOW+NOPE"}}}, "unknown actions: NOPE"),
        ({"wide": [{"columns": "a"}]}, "wide rule 0 needs 'columns' and 'action'"),
        ({"wide": [{"columns": "a", "action": "COMPLETED_FLOW", "colour": 1}]}, "wide rule 0 has unknown keys colour"),
        ({"wide": {"columns": "a"}}, "'wide' must be a list of rules"),
        ({"step_map": {"f": ["a"]}}, "malformed value"),
        ({"max_future": "2 weeks"}, "max_future: '2 weeks' is not a duration such as 90s"),
        ({"default_time": "2024-04-01"}, "default_time: '2024-04-01' has no zone"),
        ({"time_format": "epoch_ns"}, "time format 'epoch_ns' is not one of iso, epoch_s, epoch_ms, epoch_us"),
        ({"step_by": "name"}, "step_by 'name' is not one of id, index0, index1"),
        ({"unmapped": "keep"}, "unmapped 'keep' must be 'quarantine' or 'drop'"),
        ({"coalesce": ["user", "colour"]}, "coalesce names unknown fields: colour"),
        ({"once_per_flow": "X", "drop_if_also": {"SKIPPED_FLOW": "Y"}}, "unknown actions: X, Y"),
        ({"event_pattern": "("}, "event_pattern is not a regular expression"),
    ],
)
def test_bad_documents_say_what_is_wrong_and_where(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=r"^mappings/x\.yaml: .*" + message.replace("(", r"\(")):
        mapping_from_dict(doc, where="mappings/x.yaml")


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"columns": "(", "action": "COMPLETED_FLOW"}, "wide rule '\\(' is not a regular expression"),
        ({"columns": "a", "action": "DONE"}, "wide rule 'a': unknown action 'DONE'"),
        ({"columns": "a", "action": "COMPLETED_FLOW", "value": "bool"}, "value must be one of flag, time, list"),
        ({"columns": "a", "action": "COMPLETED_FLOW", "list_of": "user"}, "list_of must be 'flow' or 'step'"),
    ],
)
def test_wide_rules_are_checked(rule: dict[str, str], message: str) -> None:
    with pytest.raises(InputError, match=message):
        WideRule(**rule)


def test_time_window_and_default_instant() -> None:
    m = SourceMapping(
        max_future="1.5h", earliest_time="2020-01-01T00:00:00+01:00", default_time="2024-04-01T02:00+02:00"
    )
    assert m.time_window == (datetime(2019, 12, 31, 23, tzinfo=UTC), timedelta(minutes=90))
    assert m.default_instant == datetime(2024, 4, 1, tzinfo=UTC)
    assert SourceMapping(max_future=" 90 s ").time_window == (datetime(2000, 1, 1, tzinfo=UTC), timedelta(seconds=90))
    assert SourceMapping().default_instant is None
    assert SourceMapping(extra_time_formats=("epoch_ms", "%d/%m/%Y")).time_formats == ("iso", "epoch_ms", "%d/%m/%Y")


def test_time_zones_are_checked_with_the_closest_names() -> None:
    check_timezone("Europe/Paris")
    with pytest.raises(
        InputError, match=r"timezone 'Europe/Pari' is not a known time zone \(did you mean 'Europe/Paris'"
    ):
        SourceMapping(timezone="Europe/Pari")
    with pytest.raises(InputError, match=r"\(use an IANA name like Europe/Paris\)$"):
        check_timezone("Mars/Base")


def test_a_mapping_extends_the_presets_action_map_and_overrides_its_entries() -> None:
    from transforms.presets import PRESETS, resolve_mapping

    pendo = PRESETS["pendo"].action_map
    m = resolve_mapping("pendo", {"action_map": {"guideSnoozed": "SKIPPED_FLOW", "guideDismissed": "DROP"}})
    assert m.action_map == {**pendo, "guideSnoozed": "SKIPPED_FLOW", "guideDismissed": "DROP"}
    base = mapping_from_dict(
        {"entity_action_map": {"flow": {"seen": "STARTED_FLOW"}, "step": {"seen": "STARTED_STEP"}}}
    )
    m = mapping_from_dict({"entity_action_map": {"flow": {"done": "COMPLETED_FLOW"}}}, base=base)
    assert m.entity_action_map == {
        "flow": {"seen": "STARTED_FLOW", "done": "COMPLETED_FLOW"},
        "step": {"seen": "STARTED_STEP"},
    }
