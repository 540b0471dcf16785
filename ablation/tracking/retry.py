"""Calls to a store that outlive its restart: database and tracking-server errors that a restart or a busy
store causes are retried with exponential backoff (tenacity) for up to `window_s` seconds, and a signal
never cuts such a call short (`INTERRUPTS.critical`)."""

from __future__ import annotations

import errno
import functools
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import tenacity

from ablation.runtime import INTERRUPTS

F = TypeVar("F", bound=Callable[..., Any])

RETRY_ENV = "ABLATION_RETRY_S"
"""How long a failing store call is retried, in seconds (set from `tracking.retry_s` by the study)."""
DEFAULT_WINDOW_S = 300.0

_TRANSIENT_TEXT = (
    "connection refused",
    "connection reset",
    "server closed the connection",
    "terminating connection",
    "admin shutdown",
    "adminshutdown",
    "the database system is starting up",
    "the database system is shutting down",
    "could not connect",
    "connection is closed",
    "connection timed out",
    "ssl connection has been closed",
    "can't reconnect until invalid transaction is rolled back",
    "pendingrollbackerror",
    "database is locked",
    "max retries exceeded",
    "remote end closed",
    "bad gateway",
    "service unavailable",
    "internal server error",
    "response too many 5",
)


_PERMANENT_TEXT = (
    "database or disk is full",
    "disk i/o error",
    "no space left",
    "file too large",
    "disk quota exceeded",
    "read-only file system",
    "readonly database",
    "attempt to write a readonly",
    "permission denied",
)
"""What waiting does not mend: a full disk, a file over its size limit, a read-only store."""
_PERMANENT_ERRNO = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def permanent(exc: BaseException) -> bool:
    """Whether `exc` (or its cause) is one that no retry can fix."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, OSError) and exc.errno in _PERMANENT_ERRNO:
            return True
        if any(t in f"{type(exc).__name__} {exc}".lower() for t in _PERMANENT_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return False


SLOW_S = 2.0  # a store call this slow met a hung or overloaded store
_DISTURBED = [float("-inf")]  # when (monotonic) a store call of this process last failed or was slow


def disturbed_at() -> float:
    """When a store call of this process last needed a retry or took over SLOW_S (−inf: never): after such a
    disturbance, other workers may not have been able to beat either."""
    return _DISTURBED[0]


def window_s() -> float:
    return float(os.environ.get(RETRY_ENV, DEFAULT_WINDOW_S))


def transient(exc: BaseException) -> bool:
    """Whether `exc` (or its cause) is what a restarting or busy service gives: the call may succeed later
    (never one that `permanent` names, such as a full disk)."""
    import sqlalchemy.exc

    if permanent(exc):
        return False
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
            return True
        if isinstance(exc, sqlalchemy.exc.PendingRollbackError):
            return True
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        text = f"{type(exc).__name__} {exc}".lower()
        if any(t in text for t in _TRANSIENT_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return False


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    first = str(exc).strip().splitlines()[0][:160] if exc else ""
    name = getattr(state.fn, "__qualname__", "a store call")
    print(f"warning: {name} failed ({type(exc).__name__}: {first}); retrying", file=sys.stderr, flush=True)


def retry_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)`, retried while it fails transiently, for up to `window_s()` seconds; never
    interrupted half-way by a signal."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(transient),
        stop=tenacity.stop_after_delay(window_s()),
        wait=tenacity.wait_exponential_jitter(multiplier=0.5, max=15),
        before_sleep=_log_retry,
        reraise=True,
    )
    start = time.monotonic()
    with INTERRUPTS.critical():
        try:
            return retrying(fn, *args, **kwargs)
        finally:
            if retrying.statistics.get("attempt_number", 1) > 1 or time.monotonic() - start > SLOW_S:
                _DISTURBED[0] = time.monotonic()


def retried(fn: F) -> F:
    """Decorator form of `retry_call`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return retry_call(fn, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def configure_client_retries() -> None:
    """MLflow's HTTP client retries 5xx answers and refused connections itself; give it the same window."""
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "10")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
