"""The daemon's own life under faults: store problems come and go, the first key is kept.

Issue 11, class 9: a store problem that was fixed was neither logged as fixed nor cleared from
health, and breaking it again the same way logged nothing; the key deleted right after start
waited for the daemon to finish starting (about 150 ms, over the 100 ms promise).
"""

from __future__ import annotations

import time

from tests.conftest import Volumes, wait_for


def _store_problem(volumes: Volumes) -> str | None:
    health = volumes.health_json() or {}
    problem = (health.get("detail") or {}).get("store_problem")
    return problem if isinstance(problem, str) else None


def test_a_store_problem_is_reported_cleared_when_fixed_and_reported_again(
    volumes: Volumes, start_daemon
) -> None:
    # given: a daemon serving a valid store
    volumes.set_args(*volumes.standin_args())
    good = volumes.store.read_bytes()
    daemon = start_daemon()
    daemon.wait_health("success")
    for attempt in (1, 2):
        # when: the store is broken
        volumes.store.write_text("{not json")
        # then: the problem is logged (each time) and shown in health, and vLLM keeps running
        wait_for(lambda n=attempt: daemon.stderr().count("Keeping the last good") == n, 10, "log")
        wait_for(lambda: _store_problem(volumes), 10, "the problem in health")
        # when: the very same good content comes back
        volumes.store.write_bytes(good)
        # then: it is logged as fixed and cleared from health
        wait_for(lambda n=attempt: daemon.stderr().count("is valid again") == n, 10, "fixed")
        wait_for(lambda: _store_problem(volumes) is None, 10, "the problem cleared")
    assert len(volumes.starts()) == 1  # nothing was restarted for it


def test_a_key_deleted_right_after_start_is_written_again_at_once(
    volumes: Volumes, start_daemon
) -> None:
    # given: a daemon starting on fresh volumes
    daemon = start_daemon(wait_ready=False)
    first = wait_for(lambda: volumes.credentials.is_file() and volumes.key(), 10, "the first key")
    # when: the key is deleted as soon as it is on disk (the daemon may still be starting)
    volumes.credentials.unlink()
    deleted = time.monotonic()
    # then: a new key is back well before the periodic rescan could have found it
    wait_for(
        lambda: volumes.credentials.is_file() and volumes.key() != first, 2, "a new key", 0.002
    )
    assert time.monotonic() - deleted < 1.0
    daemon.wait_log("vllmd is up")
