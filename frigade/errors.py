"""Errors of the API edge. Transient vs terminal is a property of the class, so exactly one layer
(the client) decides about retrying by looking at the class, never at messages."""

from __future__ import annotations


class FrigadeError(Exception):
    """Base of every error this package raises."""

    transient: bool = False
    #: stops the whole run at once (exit code 3): retrying or going on cannot help
    stops_run: bool = False


class CatalogError(FrigadeError):
    """The flow catalog is unreadable or inconsistent."""


class TransientError(FrigadeError):
    transient = True


class ThrottledError(TransientError):
    """429 without the MAU message: the account's rate was exceeded."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConnectFailedError(TransientError):
    """The request never reached the server: safe to resend. ``no_connection``: no connection could
    be made at all (refused, unresolvable, timed out while connecting), so the API may be down and
    the client's connectivity gate pauses every sender and probes."""

    def __init__(self, message: str, *, no_connection: bool = False) -> None:
        super().__init__(message)
        self.no_connection = no_connection


class AmbiguousError(TransientError):
    """5xx or a connection lost after sending: the write may or may not have happened."""


class RequestRejectedError(FrigadeError):
    """400/404/422: this request is wrong; record it and hold the user's later requests for the flow."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.detail = message


class StopRunError(FrigadeError):
    stops_run = True


class ClientSetupError(StopRunError):
    """The client's own configuration is wrong (a malformed key or URL): nothing can be sent."""


class AuthError(StopRunError):
    """403: a missing, bad or wrong-kind key."""


class RulesMismatchError(StopRunError):
    """The first users of a run got back states the rules profile did not predict: the profile does
    not fit this server, and going on would push users toward states its rules would not produce."""


class MauCapError(StopRunError):
    """429 with the MAU-cap message: the account's monthly active users are used up."""


class UnreachableError(StopRunError):
    """No connection to the API for longer than the outage window: ``cannot reach URL: reason``."""


class InterruptedRunError(StopRunError):
    """The run was told to stop (Ctrl-C or SIGTERM): nothing more is sent, what was done is kept."""


MAU_CAP_MESSAGE = "Your account has used its maximum allowed MAUs. Contact Frigade support to upgrade."


class UnexpectedResponseError(FrigadeError):
    """A success status whose body is not the documented shape."""
