from __future__ import annotations

import asyncio
import bisect
import pickle
import threading
from collections.abc import Iterator

import pytest

from frigade.limiter import SlidingWindowLimiter
from lifecycle.budget import (
    DaskStore,
    LocalStore,
    ShardBudget,
    first_share,
    holds_start,
    increase_delay,
    share,
)
from tests.frigade.vtime import now, run_virtual


def virtual_limiter(rate: float) -> SlidingWindowLimiter:
    loop = asyncio.get_running_loop()
    return SlidingWindowLimiter(rate, clock=loop.time, sleep=asyncio.sleep, margin=0.0)


@pytest.mark.parametrize(
    ("workers", "shards", "finished", "expected"),
    [
        (4, 10, 0, 25.0),  # more shards than workers: the workers divide the rate
        (4, 10, 6, 25.0),  # still four left
        (4, 10, 7, 100 / 3),
        (4, 10, 9, 100.0),  # the last one has it all
        (4, 2, 0, 50.0),  # fewer shards than workers
        (1, 5, 0, 100.0),  # sequential shards: each has the whole rate
        (3, 3, 3, 100.0),  # all finished (a stale read): never a division by zero
        (3, 3, 7, 100.0),  # nor more than the rate
        (3, 3, -1, 100 / 3),
    ],
)
def test_share_rule(workers: int, shards: int, finished: int, expected: float) -> None:
    assert share(100.0, workers, shards, finished) == pytest.approx(expected)


def test_shares_only_grow_and_never_sum_above_the_rate() -> None:
    for workers in range(1, 7):
        for shards in range(1, 12):
            shares = [share(60.0, workers, shards, f) for f in range(shards)]
            assert shares == sorted(shares)
            assert first_share(60.0, workers, shards) == shares[0]
            for f, s in enumerate(shares):
                running = min(workers, shards - f)
                assert running * s <= 60.0 + 1e-9


@pytest.mark.parametrize(("rate", "workers", "shards"), [(0.0, 1, 1), (10.0, 0, 1), (10.0, 1, 0)])
def test_bad_parameters(rate: float, workers: int, shards: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        share(rate, workers, shards, 0)
    with pytest.raises(ValueError, match="must be"):
        ShardBudget(rate, workers, shards, LocalStore())


def test_holds_start_after_the_first_slots() -> None:
    assert [holds_start(n, 3, 10) for n in range(1, 6)] == [False, False, False, True, True]
    # two shards on four workers: a third start is a retry and may meet its own first attempt
    assert [holds_start(n, 4, 2) for n in range(1, 4)] == [False, False, True]
    assert increase_delay(1.0, 0.25) == 1.25


def test_local_store_counts_atomically_across_threads() -> None:
    store = LocalStore()
    assert store.get("finished") == 0

    def bump() -> None:
        for _ in range(1000):
            store.add("finished")

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("finished") == 4000
    assert store.get("started") == 0
    assert store.add("started") == 1


def test_dask_store_pickles_by_name_only() -> None:
    store = DaskStore("run-42", address="tcp://127.0.0.1:1")
    copy = pickle.loads(pickle.dumps(store))
    assert (copy.name, copy.address) == ("run-42", "tcp://127.0.0.1:1")
    with pytest.raises(ValueError, match="name"):
        DaskStore("")


def test_finished_and_share() -> None:
    budget = ShardBudget(90.0, 3, 4, LocalStore())
    assert budget.share() == pytest.approx(30.0)
    assert budget.finished() == 1
    assert budget.share() == pytest.approx(30.0)
    assert budget.finished() == 2
    assert budget.share() == pytest.approx(45.0)


def test_follow_raises_the_share_one_window_plus_a_poll_after_it_was_seen() -> None:
    store = LocalStore()
    budget = ShardBudget(100.0, 2, 2, store)

    async def main() -> list[tuple[float, int]]:
        limiter = virtual_limiter(1000)  # the first share replaces it
        changes: list[tuple[float, int]] = []
        follower = asyncio.create_task(budget.follow(limiter, poll_s=0.25))
        await asyncio.sleep(0)
        changes.append((now(), limiter.limit))
        await asyncio.sleep(2.1)
        store.add("finished")  # the other shard is done at 2.1; the poll at 2.25 sees it
        for _ in range(40):
            await asyncio.sleep(0.05)
            if limiter.limit != changes[-1][1]:
                changes.append((now(), limiter.limit))
        follower.cancel()
        return changes

    changes = run_virtual(main())
    assert changes[0] == (0.0, 50)
    assert len(changes) == 2
    seen_at = 2.25
    assert changes[1][1] == 100
    # not before one window and one poll after the count was first seen
    assert changes[1][0] >= seen_at + increase_delay(1.0, 0.25) - 1e-9
    assert changes[1][0] <= seen_at + increase_delay(1.0, 0.25) + 0.05 + 1e-9


def test_follow_counts_seen_at_start_and_holds_a_late_start() -> None:
    """A shard starting after another finished a moment ago neither takes the larger share at once
    nor sends in the window where its predecessor's last requests still are."""
    store = LocalStore()
    budget = ShardBudget(100.0, 1, 2, store)
    store.add("started")  # shard one ran and finished just now
    store.add("finished")

    async def main() -> tuple[float, int]:
        limiter = virtual_limiter(1000)
        follower = asyncio.create_task(budget.follow(limiter, poll_s=0.25))
        await asyncio.sleep(0)
        await limiter.acquire()
        first = now()
        follower.cancel()
        return first, limiter.limit

    first, limit = run_virtual(main())
    assert first == pytest.approx(1.25)
    assert limit == 100


def test_rate_holds_at_the_server_while_shards_finish() -> None:
    """Three shards on two workers, every request answered at once, shares re-divided as they finish:
    the busiest one-second window across all of them stays at the run's rate."""
    rate = 40.0
    store = LocalStore()
    sizes = [150, 40, 90]
    grants: list[float] = []

    async def shard(requests: int) -> None:
        budget = ShardBudget(rate, 2, len(sizes), store)
        limiter = virtual_limiter(rate)
        async with budget.following(limiter, poll_s=0.1):
            for _ in range(requests):
                await limiter.acquire()
                grants.append(now())
        budget.finished()

    async def main() -> None:
        slots = asyncio.Semaphore(2)  # two workers

        async def on_a_worker(requests: int) -> None:
            async with slots:
                await shard(requests)

        await asyncio.gather(*(on_a_worker(n) for n in sizes))

    run_virtual(main())
    times = sorted(grants)
    assert len(times) == sum(sizes)
    worst = max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times))
    assert worst <= rate
    # and the last shard alone did speed up to the whole rate
    assert times[-1] <= sum(sizes) / rate + 1.0


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[str]:
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0", worker_dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.wait_for_workers(2, timeout=30)
        yield cluster.scheduler_address


def _in_worker(store: DaskStore, adds: int) -> tuple[int, list[int], int]:
    import os

    counts = [store.add("finished") for _ in range(adds)]
    return os.getpid(), counts, store.get("finished")


@pytest.mark.slow
def test_dask_store_counts_across_worker_processes(dask_cluster: str) -> None:
    import distributed

    store = DaskStore("test-budget-run", address=dask_cluster)
    try:
        assert store.get("finished") == 0
        with distributed.Client(dask_cluster, set_as_default=False) as client:  # type: ignore[no-untyped-call]
            workers = list(client.scheduler_info()["workers"])
            assert len(workers) == 2
            futures = [
                client.submit(_in_worker, store, 25, workers=[w], pure=False, allow_other_workers=False)
                for w in workers
            ]
            results = client.gather(futures)
        pids = {pid for pid, _, _ in results}
        assert len(pids) == 2, "each increment ran in its own worker process"
        counts = sorted(c for _, cs, _ in results for c in cs)
        assert counts == list(range(1, 51)), "every increment was atomic: no count given twice"
        assert store.get("finished") == 50
        assert store.add("started") == 1
    finally:
        store.close()


def test_importing_the_module_loads_neither_dask_nor_prefect() -> None:
    import subprocess
    import sys

    code = (
        "import sys, lifecycle.budget; "
        "bad = [m for m in ('dask', 'distributed', 'prefect', 'prefect_dask') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_throttled_shard_makes_every_shard_cut_its_rate_once() -> None:
    """The API's throttle is the account's: one shard's cut reaches the others at their next poll,
    a repeated read of the same count cuts nothing more, and each climbs back on its own."""
    store = LocalStore()

    async def main() -> tuple[float, float, float, int, int]:
        a, b = virtual_limiter(1000), virtual_limiter(1000)
        budgets = [ShardBudget(100.0, 2, 2, store), ShardBudget(100.0, 2, 2, store)]
        followers = [asyncio.create_task(x.follow(lim, poll_s=0.25)) for x, lim in zip(budgets, (a, b), strict=True)]
        await asyncio.sleep(2.0)
        assert a.throttled(sent=now())  # nothing accepted yet: 0.9 of the 50 in force
        await asyncio.sleep(0.6)  # a's poll counts it, b's next poll sees it
        after_cut = b.rate
        await asyncio.sleep(2.0)
        for f in followers:
            f.cancel()
        return a.rate, after_cut, b.rate, b.cuts, store.get("throttled")

    a_rate, b_after_cut, b_later, b_cuts, counted = run_virtual(main())
    assert counted == 1
    assert b_cuts == 1
    assert b_after_cut < 50
    assert 45 < b_later <= 50
    assert 45 < a_rate <= 50
