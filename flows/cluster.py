"""The task runner a sharded run pushes its shards on: a Dask LocalCluster of ``--workers`` processes
on this machine, or the existing cluster ``FRIGADE_MIGRATE_DASK_ADDRESS`` names (prefect-dask's
DaskTaskRunner either way).

On an existing cluster the run folder must be on storage every worker mounts at the same path (the
workers write their shards' outcomes and snapshots there): ``storage_problem`` checks that before
any shard is pushed.

Three things make the workers behave as part of one command:
- they are spawned with SIGINT ignored, so a Ctrl-C reaches the run's process only, which stops
  every shard through the run's budget (``lifecycle.remote``) instead of killing the workers mid-write;
- they are told the Prefect API the flow reports to before they start, else each would start a
  temporary Prefect server of its own;
- the dashboard binds a random port, so two runs (or a test beside a run) never clash on 8787.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect.client.orchestration import get_client

from lifecycle.settings import Settings

if TYPE_CHECKING:
    from prefect_dask.task_runners import DaskTaskRunner


def quiet_cluster(**kwargs: Any) -> Any:
    """A ``distributed.LocalCluster`` whose worker processes ignore SIGINT (they inherit it at spawn)."""
    import distributed

    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return distributed.LocalCluster(**kwargs)  # type: ignore[no-untyped-call]
    finally:
        signal.signal(signal.SIGINT, old)


def cluster_runner(settings: Settings) -> DaskTaskRunner:
    # imported here: prefect-dask brings distributed, a quarter of a second of every run's start
    from prefect_dask.task_runners import DaskTaskRunner

    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    return DaskTaskRunner(
        cluster_class=quiet_cluster,
        cluster_kwargs={
            "n_workers": settings.workers,
            "processes": True,
            "threads_per_worker": 1,
            "dashboard_address": ":0",
            "silence_logs": 40,
        },
    )


def on_cluster(settings: Settings) -> bool:
    """Whether a sharded run's shards are pushed on a cluster (else one after another, in this process)."""
    return settings.workers > 1 or settings.dask_address is not None


async def share_prefect_api() -> None:
    """The Prefect API this flow reports to, for the workers spawned after this (a temporary server's
    address is not in the settings, only in the client)."""
    async with get_client() as client:
        os.environ["PREFECT_API_URL"] = str(client.api_url)


#: the file a run writes in its folder for every worker of a cluster to read back
_PROBE = ".storage-probe"


def storage_problem(client: Any, folder: Path) -> str | None:
    """None when every worker of the cluster (a ``distributed.Client``) reads back, at the same path, a
    token just written into the run folder; else one line naming a worker that cannot see the folder."""
    probe = folder.resolve() / _PROBE
    token = os.urandom(8).hex()
    probe.write_text(token, encoding="utf-8")
    try:
        seen: dict[str, bool] = client.run(sees_token, str(probe), token)
    finally:
        probe.unlink(missing_ok=True)
    blind = sorted(worker for worker, ok in seen.items() if not ok)
    if not blind:
        return None
    more = f" (and {len(blind) - 1} more of {len(seen)})" if len(blind) > 1 else ""
    return (
        f"the Dask worker {blind[0]}{more} cannot see the run folder {folder.resolve()}: put --run-dir (parameter "
        "run_dir) on storage every worker mounts at the same path, and start the run again there"
    )


def sees_token(path: str, token: str) -> bool:
    """On a worker: whether ``path`` holds ``token`` (the run folder is the one the run writes)."""
    try:
        return Path(path).read_text(encoding="utf-8") == token
    except OSError:
        return False
