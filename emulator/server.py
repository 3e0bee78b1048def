"""Command line of the emulator: ``python -m emulator`` (and ``frigade-migrate emulator``).

Serves in the foreground with uvicorn: one worker (state is per process), uvloop and httptools when
installed (the ``speed`` extra; asyncio and h11 otherwise), no access log. Keys come from flags or the
environment and are never printed or logged.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path

import uvicorn

from emulator.app import DEFAULT_PRIVATE_KEY, DEFAULT_PUBLIC_KEY, FAULT_KINDS, EmulatorConfig, create_app
from emulator.sample import sample_catalog
from emulator.store import Store
from frigade.catalog import Catalog, parse_catalog
from frigade.errors import CatalogError
from frigade.rules import DEFAULT_RULES, PROFILES, load_rules

__all__ = ["DEFAULT_PORT", "ENV_PRIVATE_KEY", "ENV_PUBLIC_KEY", "build_parser", "config_from_args", "main"]

DEFAULT_PORT = 8787
ENV_PUBLIC_KEY = "FRIGADE_EMULATOR_PUBLIC_KEY"
ENV_PRIVATE_KEY = "FRIGADE_EMULATOR_PRIVATE_KEY"
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0.0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _fault_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"choose among {', '.join(FAULT_KINDS)} (comma-separated)")
    return kinds


def build_parser(prog: str = "python -m emulator") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="A local stand-in for Frigade's flow-state API: an HTTP server with durable SQLite "
        "storage, keys, validation errors, throttling, a monthly-active-user cap and injected faults.",
    )
    net = parser.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    net.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port to listen on; 0 picks a free one and prints it (default: {DEFAULT_PORT})",
    )
    net.add_argument(
        "--fd",
        type=int,
        default=None,
        help="serve on this already-listening socket inherited from the parent instead of --host/--port "
        "(used by EmbeddedEmulator)",
    )

    data = parser.add_argument_group("data")
    data.add_argument(
        "--catalog",
        metavar="FILE",
        default=None,
        help="flow catalog (YAML/JSON, the simple form or a saved GET /v1/public/flows response); "
        "default: the bundled sample catalog",
    )
    data.add_argument(
        "--db",
        metavar="FILE",
        default="emulator.db",
        help="SQLite database file; state and history survive restarts on the same file "
        "(default: emulator.db in the current directory)",
    )

    data.add_argument(
        "--rules",
        metavar="PROFILE",
        default=DEFAULT_RULES.name,
        help=f"which reading of Frigade's flow-state rules to play: {', '.join(PROFILES)} "
        "or a rules file written by probe (default: sdk, what Frigade's SDK shows)",
    )
    data.add_argument(
        "--audience",
        metavar="FLOW=GLOB",
        action="append",
        default=[],
        help="targeting: only user ids matching GLOB see FLOW as visible (repeatable; a flow named "
        "several times has several patterns)",
    )

    keys = parser.add_argument_group("keys (never printed or logged)")
    keys.add_argument(
        "--public-key",
        metavar="KEY",
        default=None,
        help=f"the public API key, valid on /v1/public/* (env {ENV_PUBLIC_KEY}; default: {DEFAULT_PUBLIC_KEY})",
    )
    keys.add_argument(
        "--private-key",
        metavar="KEY",
        default=None,
        help=f"the private API key, valid everywhere and adds flowResponses "
        f"(env {ENV_PRIVATE_KEY}; default: {DEFAULT_PRIVATE_KEY})",
    )

    limits = parser.add_argument_group("limits and faults")
    limits.add_argument(
        "--rate-limit",
        type=_positive_int,
        metavar="N",
        default=None,
        help="admit at most N requests to /v1/* in any sliding one-second window; the rest get 429 "
        "with Retry-After (default: unlimited)",
    )
    limits.add_argument(
        "--mau-cap",
        type=_non_negative_int,
        metavar="N",
        default=None,
        help="at most N distinct users per calendar month; a new user beyond it gets 429 with the "
        "MAU message and no Retry-After (default: unlimited)",
    )
    limits.add_argument(
        "--fault-rate",
        type=_probability,
        metavar="P",
        default=0.0,
        help="probability (0..1) that a valid write gets an injected fault (default: 0)",
    )
    limits.add_argument(
        "--fault-kinds",
        type=_fault_kinds,
        metavar="LIST",
        default=FAULT_KINDS,
        help="comma-separated faults to choose among: error-before (500, nothing stored), error-after "
        "(500, the write is stored), drop-after (connection closed without a response, the write is "
        "stored) (default: all)",
    )
    limits.add_argument(
        "--fault-seed",
        type=int,
        metavar="N",
        default=0,
        help="seed of the fault dice, for repeatable runs (default: 0)",
    )
    limits.add_argument(
        "--latency-ms",
        type=_non_negative_float,
        metavar="M",
        default=0.0,
        help="added delay of every /v1 request in milliseconds, without blocking other requests (default: 0)",
    )
    limits.add_argument(
        "--latency-jitter-ms",
        type=_non_negative_float,
        metavar="J",
        default=0.0,
        help="plus a uniformly random 0..J milliseconds (default: 0)",
    )

    run = parser.add_argument_group("process")
    run.add_argument("--log-level", choices=_LOG_LEVELS, default="warning", help="log level (default: warning)")
    run.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop when the process that started this one exits (used by EmbeddedEmulator)",
    )
    return parser


def _load_catalog(path: str | None) -> Catalog:
    if path is None:
        return sample_catalog()
    return parse_catalog(Path(path).read_text(encoding="utf-8"), path)


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """The app's config from parsed arguments. Raises OSError/CatalogError/ValueError."""
    return EmulatorConfig(
        catalog=_load_catalog(args.catalog),
        db_path=args.db,
        public_key=args.public_key or os.environ.get(ENV_PUBLIC_KEY) or DEFAULT_PUBLIC_KEY,
        private_key=args.private_key or os.environ.get(ENV_PRIVATE_KEY) or DEFAULT_PRIVATE_KEY,
        rate_limit=args.rate_limit,
        mau_cap=args.mau_cap,
        fault_rate=args.fault_rate,
        fault_kinds=tuple(args.fault_kinds),
        fault_seed=args.fault_seed,
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms,
        rules=load_rules(args.rules),
        audiences=_audiences(args.audience),
    )


def _audiences(specs: Sequence[str]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        flow, sep, pattern = spec.partition("=")
        if not sep or not flow or not pattern:
            raise ValueError(f"--audience takes FLOW=GLOB, not {spec!r}")
        out[flow] = (*out.get(flow, ()), pattern)
    return out


def _listening_socket(host: str, port: int, fd: int | None) -> socket.socket:
    if fd is not None:
        return socket.socket(fileno=fd)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


class _DropFaultNoise(logging.Filter):
    # The drop-after fault works by returning a value from the ASGI app (see app._EmulatorApp), which
    # uvicorn reports as an error; the emulator logs the fault itself.
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("ASGI callable should return None")


def _watch_parent() -> None:
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def main(argv: Sequence[str] | None = None, prog: str = "python -m emulator") -> int:
    """Serve in the foreground until interrupted. Returns the exit code (2: bad options or files).

    ``prog`` names the command in usage and help texts, e.g. ``frigade-migrate emulator``.
    """
    parser = build_parser(prog)
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help, or a usage error already printed by argparse
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("uvicorn.error").addFilter(_DropFaultNoise())
    try:
        config = config_from_args(args)
        Store(config.db_path).close()  # fail now, with a plain message, on an unusable database path
        sock = _listening_socket(args.host, args.port, args.fd)
    except (OSError, CatalogError, ValueError) as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    if args.exit_with_parent:
        _watch_parent()

    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"Frigade emulator listening on http://{shown}:{port} (db {config.db_path}, "
        f"{len(config.catalog.active)} active flows, pid {os.getpid()})",
        file=sys.stderr,
        flush=True,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            loop="uvloop" if find_spec("uvloop") else "asyncio",
            http="httptools" if find_spec("httptools") else "h11",
            access_log=False,
            log_config=None,
            log_level=args.log_level,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
    )
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    except SystemExit as exc:  # uvicorn exits this way when the app fails to start
        return exc.code if isinstance(exc.code, int) else 1
    return 0
