"""Crash forensics on a real vLLM error: health names the cause, not just an exit status."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import wait_for

from e2e.conftest import FIGURES, Real

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(180)
def test_a_model_path_that_does_not_exist_gives_failure_health_naming_the_cause(
    real_factory: Any, cpu_env: Any, tmp_path: Any
) -> None:
    missing = tmp_path / "no-such-model"
    args = [str(missing), *cpu_env.chat_args[1:]]
    started = time.time()
    real: Real = real_factory("--auth", "flag", store={"serveArgs": args})

    def crashed() -> dict[str, Any] | None:
        health = real.health()
        return health if health.get("detail", {}).get("exit") else None

    health = wait_for(crashed, 150, "the crash to show in health", interval=0.1)
    FIGURES["crash of a missing model path to failure health"] = (
        f"{health['since'] - started:.1f} s"
    )

    message = health["message"]
    assert health["result"] == "failure"
    assert "vLLM exited with status 1 and will be restarted in 1 s." in message
    # vLLM takes a path that is not a folder for a hub id and says so: the line names it.
    assert "Repo id must be in the form" in message
    assert str(missing) in message
    assert health["detail"]["exit"]["returncode"] == 1
