"""The wire's times: one rule for 'the same instant', used by the client, the resume and the probe."""

from __future__ import annotations

import pytest

from frigade.models import same_instant


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("2024-03-01T10:00:00.123Z", "2024-03-01T10:00:00.123Z", True),
        ("2024-03-01T10:00:00.123Z", "2024-03-01T10:00:00.123+00:00", True),
        ("2024-03-01T11:00:00.123+01:00", "2024-03-01T10:00:00.123Z", True),
        # a time without zone is UTC, as the API sends and expects
        ("2024-03-01T10:00:00.123", "2024-03-01T10:00:00.123Z", True),
        # the wire carries milliseconds: what is finer is the same instant
        ("2024-03-01T10:00:00.123Z", "2024-03-01T10:00:00.1234Z", True),
        ("2024-03-01T10:00:00.123Z", "2024-03-01T10:00:00.124Z", False),
        ("2024-03-01T10:00:00Z", "2024-03-01T10:00:01Z", False),
        (None, None, True),
        (None, "2024-03-01T10:00:00Z", False),
        ("2024-03-01T10:00:00Z", None, False),
        ("not a time", "not a time", True),
        ("not a time", "2024-03-01T10:00:00Z", False),
    ],
)
def test_same_instant(a: str | None, b: str | None, same: bool) -> None:
    assert same_instant(a, b) is same
    assert same_instant(b, a) is same
