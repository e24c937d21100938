"""The outcome rule (ferry.outcome): one table of records and causes -> the typed error."""

from __future__ import annotations

from typing import Any

import pytest
from taskflow.types import failure

from ferry import errors
from ferry.model import Attempt, Migration
from ferry.outcome import host_failure, outcome_error


def record(status: str, *, forced: str | None = None, rejected: tuple[str, ...] = ()) -> Migration:
    return Migration(
        id="m1",
        instance="u1",
        instance_name="web-1",
        source="a",
        destination=None,
        status=status,
        requested_destination=forced,
        attempts=[Attempt(h, "rejected", f"{h} is full") for h in rejected],
        error="the record's error",
    )


def as_failure(exc: BaseException, *, keep_exception: bool = True) -> Any:
    try:
        raise exc
    except BaseException:
        f = failure.Failure()
    # read back from a logbook, a Failure holds type names and strings but no exception object
    return f if keep_exception else failure.Failure.from_dict(f.to_dict())


PRECHECK = errors.MigrationPreCheckError("b", "no room", "check_destination")
FORCED = record("failed", forced="b", rejected=("b",))
TRANSFER = errors.TransferFailed("a", "boom")

CASES = [
    # (record, cause) -> (error type, message contains)
    (record("completed"), None, None, None),
    (record("cancelled"), None, errors.MigrationCancelled, "aborted by request"),
    (record("cancelled"), PRECHECK, errors.MigrationCancelled, "aborted by request"),
    (record("failed", rejected=("b", "c")), PRECHECK, errors.NoValidHost, "c is full"),
    (record("failed", rejected=("b",)), PRECHECK, errors.NoValidHost, "b is full"),
    (
        record("failed", forced="b", rejected=("b",)),
        PRECHECK,
        errors.MigrationPreCheckError,
        "no room",
    ),
    (record("failed"), errors.NoValidHost({"x": "down"}), errors.NoValidHost, "no valid host"),
    (
        record("failed"),
        errors.TransferFailed("a", "boom"),
        errors.MigrationFailed,
        "record's error",
    ),
    (record("error"), PRECHECK, errors.MigrationFailed, "ended error"),
    (record("failed"), None, errors.MigrationFailed, "record's error"),
]


@pytest.mark.parametrize(("rec", "cause", "kind", "text"), CASES)
@pytest.mark.parametrize("wrap", ["exception", "failure", "failure-from-logbook"])
def test_outcome_table(rec: Migration, cause: Any, kind: Any, text: str | None, wrap: str) -> None:
    if cause is not None and wrap != "exception":
        cause = as_failure(cause, keep_exception=wrap == "failure")
    error = outcome_error(rec, cause)
    if kind is None:
        assert error is None
        return
    assert isinstance(error, kind), error
    assert text is not None and text in str(error)
    assert error.migration is rec


def test_a_forced_destination_read_back_keeps_its_message() -> None:
    rec = record("failed", forced="b", rejected=("b",))
    error = host_failure(rec, as_failure(PRECHECK, keep_exception=False))
    assert isinstance(error, errors.MigrationPreCheckError)
    assert str(error) == str(PRECHECK)


def test_not_a_host_failure() -> None:
    assert host_failure(record("failed"), errors.TransferFailed("a", "boom")) is None
    assert host_failure(record("failed"), None) is None
