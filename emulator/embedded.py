"""Run the emulator as a child process on 127.0.0.1: for the job's embedded default, end-to-end tests
and benchmarks.

The parent binds the listening socket itself (port 0 unless told otherwise) and hands it to the child,
so the port is known before the child starts and no other process can take it in between. Keys go to
the child through its environment, never its command line (which other users can read).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from emulator.app import DEFAULT_PRIVATE_KEY, DEFAULT_PUBLIC_KEY, FAULT_KINDS
from emulator.server import ENV_PRIVATE_KEY, ENV_PUBLIC_KEY
from frigade.catalog import Catalog
from frigade.rules import PROFILES, Rules

__all__ = ["EmbeddedEmulator", "EmulatorStartError"]

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


def _simple_form(catalog: Catalog) -> str:
    # JSON (which the YAML loader reads), keeping every field of each flow, versions included.
    flows = [
        {
            "slug": f.slug,
            "name": f.name,
            "type": f.type,
            "status": f.status,
            "version": f.version,
            "steps": f.config()["steps"],
        }
        for f in catalog.flows
    ]
    return json.dumps({"flows": flows}, indent=1)


class EmulatorStartError(RuntimeError):
    """The child did not become ready; the message includes its output."""


class EmbeddedEmulator:
    """A ``python -m emulator`` child process, stopped (by its own pid) when the ``with`` block ends.

    ``db_path=None`` keeps the database in a temporary folder removed on exit; give a path to keep it,
    or to start a new emulator on an old database. ``restart()`` stops and starts the child on the
    same database, on the same port when it is still free.
    """

    def __init__(
        self,
        *,
        catalog: str | os.PathLike[str] | Catalog | None = None,
        db_path: str | os.PathLike[str] | None = None,
        public_key: str = DEFAULT_PUBLIC_KEY,
        private_key: str = DEFAULT_PRIVATE_KEY,
        rate_limit: int | None = None,
        mau_cap: int | None = None,
        fault_rate: float = 0.0,
        fault_kinds: Iterable[str] = FAULT_KINDS,
        fault_seed: int = 0,
        latency_ms: float = 0.0,
        latency_jitter_ms: float = 0.0,
        rules: str | Rules | None = None,
        audiences: Mapping[str, Sequence[str]] | None = None,
        log_level: str = "warning",
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 20.0,
    ) -> None:
        self.public_key = public_key
        self.private_key = private_key
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self._workdir = Path(tempfile.mkdtemp(prefix="frigade-emulator-"))
        # Also removed when the object is dropped without close(), e.g. never entered.
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._workdir, ignore_errors=True)
        # Absolute, because the child runs in the temporary folder.
        self.db_path = Path(db_path).resolve() if db_path is not None else self._workdir / "emulator.db"
        self.log_path = self._workdir / "emulator.log"
        catalog_path: str | None
        if isinstance(catalog, Catalog):
            catalog_path = str(self._workdir / "catalog.json")
            Path(catalog_path).write_text(_simple_form(catalog), encoding="utf-8")
        else:
            catalog_path = os.path.abspath(catalog) if catalog is not None else None
        self._args = ["--db", str(self.db_path), "--log-level", log_level, "--fault-seed", str(fault_seed)]
        if catalog_path is not None:
            self._args += ["--catalog", catalog_path]
        if rate_limit is not None:
            self._args += ["--rate-limit", str(rate_limit)]
        if mau_cap is not None:
            self._args += ["--mau-cap", str(mau_cap)]
        if fault_rate:
            self._args += ["--fault-rate", repr(float(fault_rate)), "--fault-kinds", ",".join(fault_kinds)]
        if latency_ms or latency_jitter_ms:
            self._args += [
                "--latency-ms",
                repr(float(latency_ms)),
                "--latency-jitter-ms",
                repr(float(latency_jitter_ms)),
            ]
        if isinstance(rules, Rules):
            rules_path = self._workdir / "rules.json"
            rules_path.write_text(rules.to_json(), encoding="utf-8")
            self._args += ["--rules", str(rules_path)]
        elif rules is not None:
            self._args += ["--rules", rules if rules in PROFILES else os.path.abspath(rules)]
        for flow, patterns in (audiences or {}).items():
            for pattern in patterns:
                self._args += ["--audience", f"{flow}={pattern}"]
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: httpx.Client | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the emulator is not running")
        return self._proc.pid

    @property
    def url(self) -> str:
        if self._proc is None:
            raise RuntimeError("the emulator is not running")
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        if self._proc is not None:
            raise RuntimeError("the emulator is already running")
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        sock = self._bind()
        try:
            env = dict(os.environ)
            env[ENV_PUBLIC_KEY] = self.public_key
            env[ENV_PRIVATE_KEY] = self.private_key
            # The child must import this very checkout's packages, wherever the caller's cwd is.
            env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
            args = [
                sys.executable,
                "-m",
                "emulator",
                "--fd",
                str(sock.fileno()),
                "--exit-with-parent",
                *self._args,
            ]
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    pass_fds=(sock.fileno(),),
                    cwd=self._workdir,
                    # a Ctrl-C at the terminal goes to the job, which stops cleanly: the emulator
                    # must go on answering meanwhile (it exits with its parent, --exit-with-parent)
                    start_new_session=True,
                )
        finally:
            sock.close()  # the child holds its own copy
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            try:
                sock.bind((self.host, self.port))
            except OSError:
                if self.port == 0:
                    raise
                sock.bind((self.host, 0))  # the old port was taken while we were stopped
            sock.listen(2048)
        except BaseException:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        return sock

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        last_error = "no answer yet"
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                code = self._proc.poll()
                if code is not None:
                    raise EmulatorStartError(f"the emulator exited with code {code} while starting:\n{self.log_text()}")
                try:
                    answer = client.get(f"{self.url}/healthz")
                    if answer.status_code == 200 and answer.json().get("pid") == self._proc.pid:
                        return
                    last_error = f"healthz answered {answer.status_code}"
                except httpx.HTTPError as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                time.sleep(0.05)
        waited = f"{self.startup_timeout:.0f} s ({last_error})"
        raise EmulatorStartError(f"the emulator was not ready after {waited}:\n{self.log_text()}")

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the child (SIGTERM lets it close the database cleanly), kill it if it hangs."""
        if self._client is not None:
            self._client.close()
            self._client = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the child and remove the temporary folder (a caller-given db_path is kept)."""
        try:
            self.stop()
        finally:
            self._cleanup()

    def log_text(self) -> str:
        """What the child printed (it never prints keys)."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        return ""

    # -- helpers -------------------------------------------------------------------------------

    def headers(self, private: bool = True) -> dict[str, str]:
        key = self.private_key if private else self.public_key
        return {"Authorization": f"Bearer {key}"}

    def client(self, *, private: bool = False, **kwargs: Any) -> httpx.Client:
        """A new client for this emulator with the public (or private) key; the caller closes it."""
        return httpx.Client(base_url=self.url, headers=self.headers(private), **kwargs)

    def _admin(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(base_url=self.url, headers=self.headers(private=True), timeout=10.0)
        return self._client

    def stats(self) -> dict[str, Any]:
        answer = self._admin().get("/_emulator/stats")
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def reset(self) -> None:
        self._admin().post("/_emulator/reset").raise_for_status()

    def history(self, user_id: str) -> list[dict[str, Any]]:
        answer = self._admin().get("/_emulator/history", params={"userId": user_id})
        answer.raise_for_status()
        result: list[dict[str, Any]] = answer.json()["data"]
        return result
