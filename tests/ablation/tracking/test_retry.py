"""Which store errors are retried: those a restart or a busy store causes, never those waiting cannot mend."""

from __future__ import annotations

import errno

import pytest
import sqlalchemy.exc

from ablation.tracking import retry


def _db(message: str) -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("INSERT ...", {}, Exception(message))


@pytest.mark.parametrize(
    "exc",
    [
        _db("server closed the connection unexpectedly"),
        _db("database is locked"),
        ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
        RuntimeError("API request failed: Max retries exceeded with url"),
    ],
)
def test_what_a_restart_causes_is_retried(exc: BaseException) -> None:
    assert retry.transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        _db("disk I/O error"),
        _db("database or disk is full"),
        _db("attempt to write a readonly database"),
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EFBIG, "File too large"),
        OSError(errno.EROFS, "Read-only file system"),
    ],
)
def test_what_waiting_cannot_mend_fails_at_once(exc: BaseException, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not retry.transient(exc) and retry.permanent(exc)
    calls = []

    def fails() -> None:
        calls.append(1)
        raise exc

    monkeypatch.setenv(retry.RETRY_ENV, "300")
    with pytest.raises(type(exc)):
        retry.retry_call(fails)
    assert calls == [1]  # one call, no retry
