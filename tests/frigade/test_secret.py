from __future__ import annotations

import copy
import logging
import pickle
import traceback

import pytest

from frigade.secret import ApiKey

PUBLIC = "api_public_abcdef0123456789"
PRIVATE = "api_private_fedcba9876543210"
OTHER = "sk_live_0000111122223333"


@pytest.mark.parametrize(
    ("raw", "kind", "shown"),
    [
        (PUBLIC, "public", "api_public_**********"),
        (PRIVATE, "private", "api_private_**********"),
        (OTHER, "unknown", "**********"),
    ],
)
def test_every_rendering_is_masked(raw: str, kind: str, shown: str) -> None:
    key = ApiKey(raw)
    secret_part = raw.split("_")[-1]
    renderings = [
        str(key),
        repr(key),
        f"{key}",
        f"{key!r}",
        f"{key:>40}",
        "%s %r" % (key, key),  # noqa: UP031
        "{}".format(key),  # noqa: UP032
        format(key),
        repr([key]),
        repr({"key": key}),
        str((key,)),
    ]
    for text in renderings:
        assert raw not in text
        assert secret_part not in text
    assert str(key) == shown
    assert repr(key) == f"ApiKey({shown!r})"
    assert key.kind == kind
    assert key.reveal() == raw


def test_reveal_strips_surrounding_whitespace() -> None:
    # keys pasted from a terminal or an env file often carry a newline
    assert ApiKey(f"  {PUBLIC}\n").reveal() == PUBLIC


def test_empty_key_is_refused_without_echo() -> None:
    with pytest.raises(ValueError, match="empty"):
        ApiKey("   ")


def test_not_a_string_is_refused() -> None:
    with pytest.raises(TypeError):
        ApiKey(123)  # type: ignore[arg-type]


def test_immutable() -> None:
    key = ApiKey(PUBLIC)
    with pytest.raises(AttributeError):
        key._value = "x"
    with pytest.raises(AttributeError):
        key.other = 1


def test_equality_and_hash() -> None:
    assert ApiKey(PUBLIC) == ApiKey(PUBLIC)
    assert ApiKey(PUBLIC) != ApiKey(PRIVATE)
    assert ApiKey(PUBLIC) != PUBLIC
    assert len({ApiKey(PUBLIC), ApiKey(PUBLIC), ApiKey(PRIVATE)}) == 2


def test_pickle_and_copy_keep_the_key() -> None:
    key = ApiKey(PRIVATE)
    back = pickle.loads(pickle.dumps(key))
    assert back == key
    assert back.reveal() == PRIVATE
    assert copy.copy(key) is key
    assert copy.deepcopy({"k": key})["k"] is key


def test_logging_and_tracebacks_are_masked(caplog: pytest.LogCaptureFixture) -> None:
    key = ApiKey(PRIVATE)
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("using %s / %r", key, key)
    assert PRIVATE not in caplog.text
    with pytest.raises(RuntimeError) as info:
        raise RuntimeError(f"could not use {key}")
    assert PRIVATE not in "".join(traceback.format_exception(info.value))
