"""prepare's failure for an engine error from its tokenizer (workflows.activities.prepare_error): an engine that
is down is waited for until the job's deadline, any other failure ends after PREPARE_TRIES tries. The real
outage, against a llama.cpp server of the test's own, is in test_engine_outage.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from workflows.activities import ENGINE_DOWN_MAX_RETRY_DELAY, PREPARE_TRIES, prepare_error
from workflows.models import EngineError, ErrorType

DOWN = EngineError(ErrorType.engine_unavailable, "POST http://engine/tokenize: ConnectError")


def test_a_down_engine_is_waited_for_until_the_deadline() -> None:
    deadline = datetime.now(UTC) + timedelta(minutes=5)
    for try_number in (1, PREPARE_TRIES, 50):
        error = prepare_error(DOWN, try_number, deadline)
        assert (error.type, error.non_retryable) == (ErrorType.engine_unavailable.value, False)
        assert error.next_retry_delay is not None and error.next_retry_delay <= ENGINE_DOWN_MAX_RETRY_DELAY


def test_the_wait_never_passes_the_deadline() -> None:
    soon = datetime.now(UTC) + timedelta(seconds=3)
    error = prepare_error(DOWN, 20, soon)
    assert error.next_retry_delay is not None and error.next_retry_delay <= timedelta(seconds=3)
    passed = prepare_error(DOWN, 20, datetime.now(UTC) - timedelta(seconds=1))
    assert (passed.type, passed.non_retryable) == (ErrorType.deadline.value, True)


def test_other_engine_errors_end_after_prepare_tries() -> None:
    deadline = datetime.now(UTC) + timedelta(minutes=5)
    failed = EngineError(ErrorType.engine_auth, "HTTP 401")
    assert not prepare_error(failed, PREPARE_TRIES - 1, deadline).non_retryable
    assert prepare_error(failed, PREPARE_TRIES, deadline).non_retryable


def test_a_run_begun_before_the_wait_keeps_its_own_retry_policy() -> None:
    error = prepare_error(DOWN, PREPARE_TRIES, None)
    assert (error.type, error.non_retryable, error.next_retry_delay) == (
        ErrorType.engine_unavailable.value,
        False,
        None,
    )
