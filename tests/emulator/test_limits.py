"""Each limit and fault fires exactly as configured, on a real emulator process of its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from emulator.app import THROTTLE_MESSAGE
from emulator.embedded import EmbeddedEmulator
from frigade.errors import MAU_CAP_MESSAGE
from frigade.rules import Action
from tests.emulator._http import FLOW, STATES, STEPS, read, state_of, write_body

pytestmark = pytest.mark.slow

RATE = 5


def _client(emu: EmbeddedEmulator) -> httpx.Client:
    return httpx.Client(base_url=emu.url, headers=emu.headers(private=False), timeout=10.0)


def _burst(client: httpx.Client, n: int) -> tuple[list[httpx.Response], float]:
    started = time.monotonic()
    answers = [client.get(STATES, params={"userId": "u"}) for _ in range(n)]
    return answers, time.monotonic() - started


@pytest.fixture(scope="module")
def throttled() -> Iterator[EmbeddedEmulator]:
    with EmbeddedEmulator(rate_limit=RATE) as emu:
        yield emu


def test_rate_limit_answers_429_with_retry_after_at_request_n_plus_one(throttled: EmbeddedEmulator) -> None:
    with _client(throttled) as client:
        for _ in range(3):  # a stalled machine can stretch a burst past one second; try again then
            time.sleep(1.1)
            throttled.reset()
            answers, elapsed = _burst(client, RATE + 1)
            if elapsed < 0.9:
                break
        else:
            pytest.skip("the machine is too slow to send 6 requests within one second")
        assert [a.status_code for a in answers] == [200] * RATE + [429]
        last = answers[-1]
        assert last.json() == {"statusCode": 429, "message": THROTTLE_MESSAGE, "error": "Too Many Requests"}
        assert int(last.headers["Retry-After"]) >= 1

        stats = throttled.stats()
        assert stats["throttled"] == 1
        assert stats["max_requests_per_second_window"] == RATE + 1
        assert stats["requests_by_status"] == {"200": RATE, "429": 1}

        time.sleep(float(last.headers["Retry-After"]))
        assert client.get(STATES, params={"userId": "u"}).status_code == 200


def test_rate_limit_counts_every_v1_request_but_not_the_admin_endpoints(throttled: EmbeddedEmulator) -> None:
    with _client(throttled) as client:
        time.sleep(1.1)
        throttled.reset()
        for _ in range(RATE * 2):
            throttled.stats()  # /_emulator/* and /healthz are outside the throttle
            assert client.get("/healthz").status_code == 200
        for _ in range(3):
            started = time.monotonic()
            codes = [client.get(path).status_code for path in ["/v1/public/flows", STATES + "?userId=u"] * RATE]
            if time.monotonic() - started < 0.9:
                break
            time.sleep(1.1)
        else:
            pytest.skip("the machine is too slow to send the burst within one second")
        assert codes[:RATE] == [200] * RATE
        assert codes[RATE:] == [429] * RATE


def test_mau_cap_rejects_new_users_only_with_the_exact_message() -> None:
    with EmbeddedEmulator(mau_cap=3) as emu, _client(emu) as client:
        for user in ("a", "b", "c"):
            assert client.post(STATES, json=write_body(user, Action.STARTED_FLOW)).status_code == 201

        refused = client.post(STATES, json=write_body("d", Action.STARTED_FLOW))
        assert refused.status_code == 429
        assert refused.json() == {"statusCode": 429, "message": MAU_CAP_MESSAGE, "error": "Too Many Requests"}
        assert "Retry-After" not in refused.headers
        read_refused = client.get(STATES, params={"userId": "e"})
        assert read_refused.status_code == 429
        assert read_refused.json()["message"] == MAU_CAP_MESSAGE

        # users already counted this month keep working, for writes and reads
        assert client.post(STATES, json=write_body("a", Action.COMPLETED_STEP, STEPS[0])).status_code == 201
        assert state_of(read(client, "b")).started
        assert emu.history("d") == []

        stats = emu.stats()
        assert stats["mau_capped"] == 2
        assert stats["monthly_active_users"] == 3 == stats["distinct_users"]


def test_fault_before_apply_stores_nothing() -> None:
    with EmbeddedEmulator(fault_rate=1.0, fault_kinds=["error-before"]) as emu, _client(emu) as client:
        answer = client.post(STATES, json=write_body("u", Action.COMPLETED_STEP, STEPS[0]))
        assert answer.status_code == 500
        assert answer.json() == {"statusCode": 500, "message": "Internal server error"}
        assert emu.history("u") == []
        assert not state_of(read(client, "u")).started  # reads are never faulted
        stats = emu.stats()
        assert stats["faults_injected"] == {"error-before": 1, "error-after": 0, "drop-after": 0}
        assert stats["writes_accepted"] == 0


def test_fault_after_apply_answers_500_but_stores_the_write() -> None:
    with EmbeddedEmulator(fault_rate=1.0, fault_kinds=["error-after"]) as emu, _client(emu) as client:
        answer = client.post(STATES, json=write_body("u", Action.COMPLETED_STEP, STEPS[0]))
        assert answer.status_code == 500
        assert answer.json() == {"statusCode": 500, "message": "Internal server error"}
        assert [(h["actionType"], h["stepId"]) for h in emu.history("u")] == [("COMPLETED_STEP", STEPS[0])]
        assert state_of(read(client, "u")).step(STEPS[0]).completed
        assert emu.stats()["writes_accepted"] == 1


def test_dropped_connection_after_apply_is_a_transport_error_and_the_write_is_stored() -> None:
    with EmbeddedEmulator(fault_rate=1.0, fault_kinds=["drop-after"]) as emu, _client(emu) as client:
        with pytest.raises(httpx.TransportError) as raised:
            client.post(STATES, json=write_body("u", Action.COMPLETED_STEP, STEPS[0]))
        assert isinstance(raised.value, httpx.RemoteProtocolError | httpx.ReadError)
        assert [h["actionType"] for h in emu.history("u")] == ["COMPLETED_STEP"]
        assert state_of(read(client, "u")).step(STEPS[0]).completed  # the same client reconnects
        stats = emu.stats()
        assert stats["faults_injected"]["drop-after"] == 1
        assert "500" not in stats["requests_by_status"]


def test_faults_follow_the_seed_and_the_rate() -> None:
    def outcomes(client: httpx.Client) -> list[str]:
        seen = []
        for i in range(40):
            try:
                answer = client.post(STATES, json=write_body(f"u{i}", Action.STARTED_FLOW))
                seen.append(str(answer.status_code))
            except httpx.TransportError:
                seen.append("drop")
        return seen

    with EmbeddedEmulator(fault_rate=0.5, fault_seed=42) as emu, _client(emu) as client:
        first = outcomes(client)
        faults = emu.stats()["faults_injected"]
        emu.reset()  # reseeds the dice
        assert outcomes(client) == first
    assert 5 <= first.count("201") <= 35
    assert first.count("drop") == faults["drop-after"]
    assert first.count("500") == faults["error-before"] + faults["error-after"]
    assert all(faults[k] > 0 for k in faults)


def test_latency_adds_at_least_the_configured_delay_without_blocking_others() -> None:
    with EmbeddedEmulator(latency_ms=200, latency_jitter_ms=50) as emu, _client(emu) as client:
        started = time.monotonic()
        assert client.get("/v1/public/flows").status_code == 200
        assert time.monotonic() - started >= 0.2

        async def ten_at_once() -> float:
            async with httpx.AsyncClient(base_url=emu.url, headers=emu.headers(private=False)) as c:
                t0 = time.monotonic()
                answers = await asyncio.gather(
                    *(c.post(STATES, json=write_body(f"u{i}", Action.STARTED_FLOW)) for i in range(10))
                )
                assert all(a.status_code == 201 for a in answers)
                return time.monotonic() - t0

        elapsed = asyncio.run(ten_at_once())
        assert 0.2 <= elapsed < 10 * 0.2  # the delays overlap: asyncio.sleep, not a blocking sleep
        assert read(client, "u3").flow(FLOW) is not None
