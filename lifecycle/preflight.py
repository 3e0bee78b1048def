"""Checks that run before Prefect or any server starts, so that a bad path, preset, mapping, catalog
or column answers in about a second instead of after tens of seconds of start-up; and the target
check, one cheap authenticated read that tells a bad key or a misspelled host before anything is
planned, sent or written.

They read only the files' schemas and first rows; the run's own analysis still checks every row.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from frigade.client import FrigadeClient
from frigade.errors import AuthError, FrigadeError, RequestRejectedError
from lifecycle.catalogs import catalog_source, local_catalog
from lifecycle.exports import analyze_exports, check_exports, sources_of
from lifecycle.job import mapping_of
from lifecycle.prepare import refuse_nothing_to_migrate, refuse_too_many_quarantined
from lifecycle.readers import KINDS, open_exports
from lifecycle.runfolder import normal_target
from lifecycle.settings import DEFAULT_API_URL, Settings
from transforms.analysis import Analysis, plan_requests
from transforms.mapping import map_events
from transforms.schema import InputError
from transforms.validate import ROW_SPAN, VALID, catalog_frames

#: seconds the target check waits for its one answer (a read answers in well under one)
CHECK_TIMEOUT_S = 10.0
#: the targets (URL and a digest of the key) this process has checked: a console command's flow
#: runs in its process, and checks again only what it was not already told
_checked: set[tuple[str, str]] = set()

#: rows of each export analysed up front: enough for a column-wide problem (a naive time, an
#: unparseable format) to show, little enough to answer at once on any size of file
SAMPLE_ROWS = 10_000


def check_inputs(exports: Sequence[str], settings: Settings, overrides: dict[str, Any] | None = None) -> None:
    """Raise InputError (exit 2) for the first problem a run would stop on: no such file, an unreadable
    one, an unknown preset, a malformed mapping or catalog, a missing column, a naive time."""
    if not exports:
        raise InputError("no export files given", hint=f"name at least one export ({KINDS}), folder or bucket")
    paths = [Path(p) for p in exports]
    settings.rules_profile()
    mapping = mapping_of(settings, overrides)
    check_exports(paths, mapping)
    catalog = local_catalog(catalog_source(settings.catalog, settings.embedded))
    if catalog is not None:
        sample = analyze_exports(paths, mapping, catalog, head=SAMPLE_ROWS)
        files = len(open_exports(paths))  # a folder or an archive is several
        _refuse_if_nothing_to_migrate(sample, files)
        if settings.max_quarantined is not None and _whole(sample, files):
            planned = plan_requests(sample, mode=settings.mode, rules=settings.rules_profile())
            refuse_too_many_quarantined(planned.counts, planned.quarantine, settings.max_quarantined)
        return
    # Without the catalog, the mapping can still be held against every file's columns.
    steps = catalog_frames([], {})[1]
    for source in sources_of(paths, mapping):
        map_events(source.scan, mapping, source.name, steps=steps).collect_schema()


def _refuse_if_nothing_to_migrate(sample: Analysis, files: int) -> None:
    """When the sample is the whole export (every file shorter than it) and not one of its rows can
    be migrated, say why now rather than after Prefect and the emulator have started."""
    problems = sample.rows.get_column("problem")
    quarantined = int((problems > VALID).sum())
    if not _whole(sample, files) or not quarantined or bool((problems == VALID).any()):
        return
    counts = {"rows_in": sample.rows.height, "rows_quarantined": quarantined}
    refuse_nothing_to_migrate(counts, sample.quarantine)


def _whole(sample: Analysis, files: int) -> bool:
    """Whether the sample is the whole export: every file shorter than it."""
    per_file = (sample.rows.get_column("row_key") // ROW_SPAN).value_counts()
    return per_file.height <= files and bool((per_file.get_column("count") < SAMPLE_ROWS).all())


async def check_target(settings: Settings) -> None:
    """One cheap authenticated read of the configured API (``GET /v1/public/flows``) before anything
    is planned: a host that does not resolve is a mistyped URL, refused at once (exit 2) rather than
    waited out as an outage; a refused key stops here (exit 3), before a run folder or a state folder
    exists and before one write is sent. An API that cannot be reached or answers 5xx is let through:
    the run rides out an outage for its ``--outage-window``. Nothing to check on the embedded emulator."""
    if settings.embedded:
        return
    url = settings.api_url or DEFAULT_API_URL
    key = settings.api_key.reveal() if settings.api_key is not None else ""
    seen = (normal_target(url), hashlib.sha256(key.encode()).hexdigest())
    if seen in _checked:
        return
    shown = normal_target(url)
    host = urlsplit(url).hostname
    if not host:
        raise InputError(f"the API URL {shown} names no host; check --api-url or FRIGADE_API_URL")
    if not _proxied(url):
        try:
            await asyncio.get_running_loop().getaddrinfo(host, None)
        except socket.gaierror as exc:
            raise InputError(
                f"cannot resolve the API's host {host!r} ({exc.strerror}): check --api-url or FRIGADE_API_URL "
                f"({shown}); nothing was sent"
            ) from None
    client = FrigadeClient(
        url, settings.api_key, rate=settings.rate, concurrency=1, timeout=CHECK_TIMEOUT_S, max_attempts=2
    )
    async with client:
        try:
            await client.list_flows()
        except AuthError as exc:
            raise AuthError(
                f"{str(exc).rstrip('.')} at {shown}: check FRIGADE_API_KEY (or --api-key) and the URL; "
                "nothing was sent and no run folder was made"
            ) from None
        except RequestRejectedError as exc:
            raise InputError(
                f"{shown} does not answer as the Frigade API (GET /v1/public/flows: {exc}); check --api-url "
                "or FRIGADE_API_URL"
            ) from None
        except FrigadeError:
            return  # unreachable or failing now: an outage, which the run rides out for its window
    _checked.add(seen)


def _proxied(url: str) -> bool:
    """Whether requests to ``url`` go through a proxy (which resolves the host, not this machine)."""
    host = urlsplit(url).hostname or ""
    scheme = urlsplit(url).scheme
    return scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(host)
