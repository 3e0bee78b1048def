"""Benchmark 10, the whole job on an account shaped like a real one, with its defaults only: the rate
it reaches at any distance from the API, against a server throttling below it, and its CPU.

`frigade-migrate backfill EXPORT --catalog FILE --rate R` (no `--concurrency`: the number in flight
must follow the API by itself) against a standalone emulator whose catalog has 5 flows of 2-6 steps,
with a private key, so that every answer carries every eligible flow with its history. The export is
generated (``bench.datagen``): users with several flows each, partway, finished, dismissed, reset and
redone. One Prefect server serves the whole benchmark. Cases, each a fresh emulator:

- R = 500 at 50, 150 and 300 ms of API latency, and R = 50 at 50 ms;
- a server throttling at ``--server-limit`` (50/s) while the job is told ``--rate 100``.

Figures per case: the push's rate at the server (accepted requests between the first and the last,
from the run's outcomes), its ratio to the target, 429s, the busiest second at the emulator, the job's
CPU per request, the emulator's CPU (share of one core over the job), and the job's peak RSS. Then the
same planned writes of the 50 ms case, sent by a raw aiohttp loop at the same rate to a fresh
emulator: its CPU per request, and the job's over it. Targets (issue 24): >= 0.95 R at every latency
and at R = 50, busiest second <= R and no 429; throttled: >= 0.9 of the server's limit and <= 5 % of
requests answered 429; CPU per request <= 2x the loop's.

    python -m bench.real_account [--seconds 20] [--latencies 50,150,300] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from bench import datagen
from bench._common import Figure, base_parser, run_child, run_main
from bench.whole_job import push_rate
from emulator.embedded import EmbeddedEmulator
from frigade.catalog import Catalog, parse_catalog
from frigade.push import PlannedRequest, write_of
from tests.e2e.servers import prefect_server, quiet_prefect_env
from transforms.work import request_body_fields

NAME = "real_account"
#: five flows of 2-6 steps, as a real account's onboarding might have
CATALOG_YAML = """\
flows:
  - {slug: setup_checklist, name: Setup checklist, type: CHECKLIST,
     steps: [{id: profile}, {id: connect}, {id: import}, {id: invite}, {id: dashboard}, {id: alerts}]}
  - {slug: product_tour, name: Product tour, type: TOUR,
     steps: [{id: welcome}, {id: sidebar}, {id: search}, {id: reports}, {id: settings}]}
  - {slug: billing_checklist, name: Billing, type: CHECKLIST,
     steps: [{id: plan}, {id: card}, {id: invoice}, {id: tax}]}
  - {slug: nps_survey, name: NPS survey, type: SURVEY,
     steps: [{id: score}, {id: reason}, {id: thanks}]}
  - {slug: reports_announcement, name: Reports announcement, type: ANNOUNCEMENT,
     steps: [{id: intro}, {id: try-it}]}
"""
#: requests a user of this export takes in a state plan, measured (to size an export to a push length)
REQUESTS_PER_USER = 4.4
SERVER_LIMIT = 50


@dataclass(frozen=True)
class Case:
    label: str
    rate: int
    latency_ms: float
    server_limit: int | None = None

    @property
    def target(self) -> float:
        """What the push should reach: the rate, or the server's limit when it throttles below."""
        return float(min(self.rate, self.server_limit or self.rate))


@dataclass(frozen=True)
class Result:
    case: Case
    code: int
    planned: int
    sent: int
    achieved: float
    throttled: int
    requests: int
    window: int
    cpu_s: float
    rss_bytes: int
    wall_s: float
    emulator_cpu_s: float
    tail: str
    #: the rate until 95 % of the requests were answered: the push without the last users' tail,
    #: each user's requests one after the other (a user of 20 requests at 300 ms takes 6 s)
    steady: float = float("nan")

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / max(1, self.sent) * 1e6


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process (its children it waited for included)."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def _planned(run_dir: Path) -> int:
    return pl.scan_parquet(run_dir / "plan.parquet").select(pl.len()).collect().item()  # type: ignore[no-any-return]


def _run_case(case: Case, export: Path, catalog: Path, tmp: Path, env: dict[str, str]) -> Result:
    run_dir, state_dir = tmp / f"run-{case.label}", tmp / f"state-{case.label}"
    with EmbeddedEmulator(catalog=catalog, rate_limit=case.server_limit, latency_ms=case.latency_ms) as emu:
        cmd = ["cli", "backfill", str(export), "--catalog", str(catalog), "--api-url", emu.url]
        cmd += ["--rate", str(case.rate), "--run-dir", str(run_dir), "--state-dir", str(state_dir)]
        before = _proc_cpu(emu.pid)
        job = run_child(cmd, tmp, env=env | {"FRIGADE_API_KEY": emu.private_key})
        emulator_cpu = _proc_cpu(emu.pid) - before
        stats = emu.stats()
    achieved, sent = push_rate(run_dir) if job.code == 0 else (float("nan"), 0)
    tail = "\n".join(job.output.strip().splitlines()[-4:])
    return Result(
        steady=steady_rate(run_dir) if job.code == 0 and sent else float("nan"),
        case=case,
        code=job.code,
        planned=_planned(run_dir) if (run_dir / "plan.parquet").exists() else 0,
        sent=sent,
        achieved=achieved,
        throttled=int(stats["throttled"]),
        requests=int(stats["writes_accepted"]) + int(stats["throttled"]),
        window=int(stats["max_requests_per_second_window"]),
        cpu_s=job.cpu_s,
        rss_bytes=job.max_rss_bytes,
        wall_s=job.wall_s,
        emulator_cpu_s=emulator_cpu,
        tail=tail,
    )


def steady_rate(run_dir: Path, share: float = 0.95) -> float:
    """Requests answered per second from the first answer until ``share`` of them were."""
    at = pl.scan_parquet(run_dir / "outcomes" / "*.parquet").select(pl.col("at").sort()).collect()["at"]
    k = max(1, int(share * len(at)) - 1)
    span = float(at[k]) - float(at[0])
    return k / span if span > 0 else float("nan")


def write_bodies(run_dir: Path, path: Path) -> int:
    """The run's planned writes as wire bodies, one user per line in plan order (for the raw loop)."""
    plan = pl.read_parquet(run_dir / "plan.parquet").sort("user_id", "seq", maintain_order=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for (_,), rows in plan.group_by("user_id", maintain_order=True):
            bodies = [write_of(PlannedRequest(**request_body_fields(r))).body() for r in rows.iter_rows(named=True)]
            n += len(bodies)
            fh.write(json.dumps(bodies, separators=(",", ":")) + "\n")
    return n


async def _raw_loop(url: str, key: str, lines: list[str], rate: float, conc: int) -> int:
    """The least a client can do per request: users in parallel, each user's writes in order, paced by
    a plain schedule at 0.95 R (request i not before t0 + i / (0.95 R)), answers parsed as JSON."""
    import aiohttp

    users = iter(lines)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    sent, slot, t0 = 0, 0, time.monotonic()
    async with aiohttp.ClientSession(url, headers=headers, connector=aiohttp.TCPConnector(limit=conc)) as session:

        async def worker() -> None:
            nonlocal sent, slot
            for line in users:
                for body in json.loads(line):
                    at = t0 + slot / (0.95 * rate)
                    slot += 1
                    if (delay := at - time.monotonic()) > 0:
                        await asyncio.sleep(delay)
                    async with session.post("/v1/public/flowStates", data=json.dumps(body)) as r:
                        await r.json()
                        sent += r.status == 201

        await asyncio.gather(*(worker() for _ in range(conc)))
    return sent


def raw_child(argv: Sequence[str]) -> int:
    url, key, bodies, rate, conc = argv
    lines = Path(bodies).read_text(encoding="utf-8").splitlines()
    print(json.dumps({"sent": asyncio.run(_raw_loop(url, key, lines, float(rate), int(conc)))}))
    return 0


def _raw(result: Result, catalog: Path, tmp: Path, env: dict[str, str]) -> tuple[int, float, float]:
    """(writes accepted, CPU seconds, CPU per request in µs) of the raw loop on ``result``'s plan."""
    bodies = tmp / f"bodies-{result.case.label}.jsonl"
    write_bodies(tmp / f"run-{result.case.label}", bodies)
    case = result.case
    with EmbeddedEmulator(catalog=catalog, latency_ms=case.latency_ms) as emu:
        conc = max(8, round(case.rate * (case.latency_ms / 1000 + 0.05) * 2))
        loop = run_child(
            ["bench.real_account", "--raw-child", emu.url, emu.private_key, str(bodies), str(case.rate), str(conc)],
            tmp,
            env=env,
        )
        accepted = int(emu.stats()["writes_accepted"])
    return accepted, loop.cpu_s, loop.cpu_s / max(1, accepted) * 1e6


def _figures(r: Result) -> list[Figure]:
    c = r.case
    b = f"{NAME}[{c.label}]"
    ratio = r.achieved / c.target
    figs = [
        Figure(b, f"{c.label}: backfill exit code", r.code, "", "0", r.code == 0),
        Figure(b, f"{c.label}: requests sent", r.sent, "", f"= {r.planned} (all planned)", r.sent == r.planned),
    ]
    if c.server_limit is None:
        figs += [
            Figure(
                b, f"{c.label}: push rate at the server", r.achieved, "req/s", f">= {0.95 * c.rate:g}", ratio >= 0.95
            ),
            Figure(b, f"{c.label}: of R", ratio, "", ">= 0.95", ratio >= 0.95),
            Figure(b, f"{c.label}: 429s at the emulator", r.throttled, "", "0", r.throttled == 0),
            Figure(b, f"{c.label}: busiest 1-s window", r.window, "req", f"<= {c.rate}", r.window <= c.rate),
        ]
    else:
        share = r.throttled / max(1, r.requests)
        figs += [
            Figure(
                b,
                f"{c.label}: push rate at the server",
                r.achieved,
                "req/s",
                f">= {0.9 * c.target:g}",
                ratio >= 0.9,
            ),
            Figure(b, f"{c.label}: of the server's limit", ratio, "", ">= 0.9", ratio >= 0.9),
            Figure(
                b,
                f"{c.label}: requests answered 429 ({r.throttled} of {r.requests})",
                share,
                "",
                "<= 0.05",
                share <= 0.05,
            ),
        ]
    push_s = r.sent / r.achieved if r.achieved == r.achieved and r.achieved > 0 else r.wall_s
    figs += [
        Figure(b, f"{c.label}: push rate until 95 % answered (without the last users' tail)", r.steady, "req/s"),
        Figure(b, f"{c.label}: job CPU per request, all in", r.cpu_us, "µs"),
        Figure(b, f"{c.label}: job peak RSS", r.rss_bytes / 2**20, "MiB"),
        Figure(b, f"{c.label}: job wall time", r.wall_s, "s"),
        Figure(
            b,
            f"{c.label}: emulator CPU, share of one core over the push",
            r.emulator_cpu_s / max(push_s, 1e-9),
            "",
            f"{r.emulator_cpu_s / max(1, r.requests) * 1e6:,.0f} µs per request",
        ),
    ]
    return figs


@contextlib.contextmanager
def account(tmp: Path) -> Iterator[tuple[Path, Catalog, dict[str, str]]]:
    """The account's catalog file in ``tmp``, the catalog, and the environment of a job child (no
    FRIGADE_* of this shell) served by one Prefect server started here for every job of the run."""
    catalog = tmp / "catalog.yaml"
    catalog.write_text(CATALOG_YAML, encoding="utf-8")
    home = tmp / "prefect-home"
    home.mkdir()
    with prefect_server(home) as api:
        env = {k: "" for k in os.environ if k.startswith("FRIGADE_")} | quiet_prefect_env(home)
        env["PREFECT_API_URL"] = api
        yield catalog, parse_catalog(CATALOG_YAML, str(catalog)), env


def write_users(catalog: Catalog, path: Path, users: int, seed: int) -> None:
    """A generated export of about ``users`` users of the account (``bench.datagen``)."""
    datagen.write_export(catalog, path, round(users * datagen.ROWS_PER_USER), seed)


def measure(cases: Sequence[Case], seconds: float, seed: int, tmp: Path) -> list[Figure]:
    figs: list[Figure] = []
    results: list[Result] = []
    with account(tmp) as (catalog, parsed, env):
        for case in cases:
            users = max(4, round(case.target * seconds / REQUESTS_PER_USER))
            export = tmp / f"export-{case.label}.csv"
            write_users(parsed, export, users, seed)
            result = _run_case(case, export, catalog, tmp, env)
            results.append(result)
            figs += _figures(result)
            print(f"{case.label}: {result.achieved:.1f} req/s of {case.target:g}, exit {result.code}", flush=True)
        # the job's fixed start (imports, Prefect's flow, planning, the report), from a job of a few
        # users: what a migration of any size pays once, here spread over a short push
        tiny = tmp / "export-tiny.csv"
        write_users(parsed, tiny, 4, seed)
        start = _run_case(Case("start", cases[0].rate, cases[0].latency_ms), tiny, catalog, tmp, env)
        if start.code != 0:
            print(f"the fixed-start job exited {start.code}:\n{start.tail}", flush=True)
    ratios = ", ".join(f"{r.case.label} {r.achieved / r.case.target:.2f}" for r in results)
    figs.append(Figure(NAME, "push rate / target, side by side", ratios))
    base = next((r for r in results if r.code == 0 and r.case.server_limit is None), None)
    if base is not None:
        accepted, _, raw_us = _raw(base, catalog, tmp, env)
        ratio = base.cpu_us / raw_us if raw_us else float("inf")
        beyond = (base.cpu_s - start.cpu_s) / max(1, base.sent) * 1e6
        b = f"{NAME}[cpu]"
        figs += [
            Figure(b, f"raw aiohttp loop CPU per request ({base.case.label})", raw_us, "µs", f"{accepted} sent"),
            Figure(b, f"job / aiohttp CPU per request, all in ({base.case.label})", ratio, "x", "<= 2", ratio <= 2.0),
            Figure(b, f"job's fixed start (a job of {start.planned} requests, exit {start.code})", start.cpu_s, "s"),
            Figure(
                b,
                f"job / aiohttp CPU per request beyond the fixed start ({base.case.label})",
                beyond / raw_us if raw_us else float("inf"),
                "x",
                f"{beyond:,.0f} µs per request",
            ),
        ]
    return figs


def cases_of(latencies: Sequence[float], rate: int, low_rate: int, server_limit: int) -> list[Case]:
    out = [Case(f"R={rate} {lat:g}ms", rate, lat) for lat in latencies]
    out.append(Case(f"R={low_rate} {latencies[0]:g}ms", low_rate, latencies[0]))
    out.append(Case(f"R={2 * server_limit} throttled@{server_limit}", 2 * server_limit, latencies[0], server_limit))
    return out


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=20.0, help="push length to size each export for (default 20)")
    p.add_argument("--latencies", default="50,150,300", help="API latencies in ms at R (default 50,150,300)")
    p.add_argument("--rate", type=int, default=500, help="R (default 500)")
    p.add_argument("--low-rate", type=int, default=50, help="the low R, at the first latency (default 50)")
    p.add_argument(
        "--server-limit", type=int, default=SERVER_LIMIT, help="the throttling server's limit; --rate is twice it"
    )
    p.add_argument("--only", help="run only the cases whose label contains this (e.g. 300ms, throttled)")
    p.add_argument("--keep", metavar="DIR", help="keep the exports and run folders in DIR")


def run(args: argparse.Namespace) -> list[Figure]:
    latencies = [float(x) for x in str(args.latencies).split(",") if x.strip()]
    seconds = float(args.seconds)
    cases = cases_of(latencies, int(args.rate), int(args.low_rate), int(args.server_limit))
    if args.quick:
        seconds = 2.0
        cases = [Case("R=200 50ms", 200, 50.0), Case("R=40 throttled@20", 40, 50.0, 20)]
    if args.only:
        cases = [c for c in cases if str(args.only) in c.label]
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=False)
        return measure(cases, seconds, int(args.seed), Path(args.keep).resolve())
    with tempfile.TemporaryDirectory(prefix="bench-real-account-") as tmp:
        return measure(cases, seconds, int(args.seed), Path(tmp))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--raw-child"]:
        return raw_child(argv[1:])
    p = base_parser(f"python -m bench.{NAME}", __doc__.split("\n")[0] if __doc__ else "")
    add_args(p)
    return run_main("Benchmark 10: the whole job on a real account's shape, defaults only", run, p, argv)


if __name__ == "__main__":
    raise SystemExit(main())
