"""The health state machine (CONTRACT.md §3), driven by an injected clock: no real waiting."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from vllmd.core.fetchstate import FetchError, FetchState
from vllmd.core.health import (
    LOADING_MESSAGE,
    NO_MODEL_MESSAGE,
    READY_MESSAGE,
    SET_MODEL_TASK,
    Diagnosis,
    ExitInfo,
    Fetching,
    Phase,
    Progress,
    Snapshot,
    Verdict,
    evaluate,
    fetch_message,
    loading_deadline,
    timeout_message,
)

GRACE = 2_100.0
CAP = 14_400.0
T0 = 1_000.0  # monotonic time the configuration was launched


def health(snap: Snapshot, now: float, grace: float = GRACE, cap: float = CAP) -> Verdict:
    return evaluate(snap, now, grace, cap)


def starting(
    progress: Progress | None = None, *, exit: ExitInfo | None = None, model: str | None = None
) -> Snapshot:
    return Snapshot(
        Phase.STARTING,
        config_started_at=T0,
        progress=progress or Progress(),
        exit=exit,
        model=model,
    )


def exit_detail(verdict: Verdict, key: str) -> Mapping[str, object]:
    value = verdict.detail[key]
    assert isinstance(value, dict)
    return value


# -- no model ------------------------------------------------------------------------------------


def test_no_model_is_a_failure_with_the_critical_set_model_task() -> None:
    verdict = health(Snapshot(Phase.NO_MODEL), now=T0)

    assert verdict.result == "failure"
    assert verdict.message == 'No model selected. Run the "Set Model" action.'
    assert verdict.task == {
        "action": "set-model",
        "name": "Set Model",
        "severity": "critical",
        "reason": "Select which AI model vLLM should serve",
    }


def test_no_model_with_an_invalid_store_says_why_in_message_and_detail() -> None:
    problem = "DATA/store.json is not valid JSON (line 1, column 1); the last good one is kept"

    verdict = health(Snapshot(Phase.NO_MODEL, store_problem=problem), now=T0)

    assert verdict.message == f"{NO_MODEL_MESSAGE} {problem}."
    assert verdict.detail["store_problem"] == problem
    assert verdict.task == SET_MODEL_TASK


# -- loading ---------------------------------------------------------------------------------------


def test_loading_says_the_exact_upstream_sentence() -> None:
    verdict = health(starting(), now=T0 + 1)

    assert verdict.result == "loading"
    assert verdict.message == (
        "The vLLM API is starting. A first-time model download plus load can take 30+ minutes; "
        "loading an already-cached model can take 15+ minutes. Exact time depends on your "
        "hardware resources and network bandwidth."
    )
    assert verdict.task is None


def test_loading_message_ends_with_the_download_so_far_and_its_rate() -> None:
    progress = Progress(downloaded_bytes=12_400_000_000, download_rate_bps=48_000_000.0)

    verdict = health(starting(progress), now=T0 + 60)

    assert verdict.message == f"{LOADING_MESSAGE} Downloading: 12.4 GB so far, 48.0 MB/s."
    assert verdict.detail["download"] == {"bytes": 12_400_000_000, "rate_bps": 48_000_000}


def test_loading_message_ends_with_the_step_vllm_reports() -> None:
    verdict = health(starting(Progress(loading="Loading weights: shard 3/8.")), now=T0 + 60)

    assert verdict.message == f"{LOADING_MESSAGE} Loading weights: shard 3/8."
    assert verdict.detail["loading"] == "Loading weights: shard 3/8."


def test_a_finished_download_is_reported_with_the_loading_step() -> None:
    progress = Progress(
        downloaded_bytes=16_000_000_000,
        download_rate_bps=0.0,
        loading="Loading weights: shard 1/4.",
    )

    verdict = health(starting(progress), now=T0 + 60)

    assert verdict.message.endswith("Downloaded: 16.0 GB so far. Loading weights: shard 1/4.")


def test_loading_detail_does_not_change_while_only_time_passes() -> None:
    snap = starting(Progress(downloaded_bytes=5, download_rate_bps=1.0), model="Qwen/Qwen3-8B")

    assert health(snap, now=T0 + 10) == health(snap, now=T0 + 900)


# -- ready -----------------------------------------------------------------------------------------


def test_ready_is_success() -> None:
    verdict = health(Snapshot(Phase.READY, config_started_at=T0, model="Qwen/Qwen3-8B"), now=T0)

    assert (verdict.result, verdict.message, verdict.task) == ("success", READY_MESSAGE, None)
    assert verdict.message == "The vLLM API is ready"
    assert verdict.detail["model"] == "Qwen/Qwen3-8B"


# -- the grace -------------------------------------------------------------------------------------


def test_grace_turns_loading_into_failure_exactly_at_the_boundary() -> None:
    snap = starting()

    before = health(snap, now=T0 + GRACE - 0.001)
    at = health(snap, now=T0 + GRACE)

    assert before.result == "loading"
    assert at.result == "failure"
    assert at.message == (
        "The vLLM API did not come up within 35 minutes. Check the service logs for errors."
    )
    assert at.detail["timeout"] == "no-progress"


@pytest.mark.parametrize(
    ("grace_s", "minutes"),
    [(2_100, "35 minutes"), (2_101, "36 minutes"), (61, "2 minutes"), (60, "1 minute")],
)
def test_the_minutes_are_the_grace_rounded_up(grace_s: float, minutes: str) -> None:
    verdict = health(starting(), now=T0 + grace_s, grace=grace_s)

    assert verdict.message == timeout_message(grace_s)
    assert f"within {minutes}." in verdict.message


def test_the_clock_runs_from_the_configuration_launch_through_crash_restarts() -> None:
    # vLLM crashed and was restarted 30 minutes in: the snapshot keeps the configuration's start
    crashed_once = ExitInfo(returncode=1, restart_delay_s=1.0, diagnosis=Diagnosis("boom"))
    snap = starting(exit=crashed_once)

    assert health(snap, now=T0 + GRACE - 1).result == "loading"
    assert health(snap, now=T0 + GRACE).result == "failure"


def test_a_new_configuration_starts_a_new_clock() -> None:
    old = starting()
    new = Snapshot(Phase.STARTING, config_started_at=T0 + GRACE)

    assert health(old, now=T0 + GRACE).result == "failure"
    assert health(new, now=T0 + GRACE).result == "loading"


# -- stall-aware grace and the hard cap ------------------------------------------------------------


def test_a_download_that_keeps_growing_postpones_the_failure() -> None:
    progressing = starting(Progress(downloaded_bytes=30_000_000_000, last_progress_at=T0 + 3_000))

    assert health(progressing, now=T0 + GRACE).result == "loading"
    assert health(progressing, now=T0 + 3_000 + GRACE - 0.001).result == "loading"
    assert health(progressing, now=T0 + 3_000 + GRACE).result == "failure"


def test_a_stalled_download_fails_after_the_grace_without_progress() -> None:
    stalled = starting(Progress(downloaded_bytes=1_000_000, last_progress_at=T0 + 60))

    verdict = health(stalled, now=T0 + 60 + GRACE)

    assert verdict.result == "failure"
    assert verdict.message == timeout_message(GRACE)


def test_progress_early_in_the_grace_does_not_shorten_or_extend_it() -> None:
    early = starting(Progress(last_progress_at=T0 + 10))

    assert health(early, now=T0 + GRACE - 0.001).result == "loading"
    assert health(early, now=T0 + GRACE + 10).result == "failure"


def test_the_hard_cap_fails_loading_even_while_it_progresses() -> None:
    now = T0 + CAP
    busy = starting(Progress(downloaded_bytes=10**11, last_progress_at=now - 1))

    assert health(busy, now=now - 0.001).result == "loading"
    verdict = health(busy, now=now)
    assert verdict.result == "failure"
    assert verdict.message == (
        "The vLLM API did not come up within 240 minutes. Check the service logs for errors."
    )
    assert verdict.detail["timeout"] == "cap"


def test_a_cap_below_the_grace_never_shortens_the_grace() -> None:
    snap = starting()

    assert health(snap, now=T0 + 100, grace=GRACE, cap=60).result == "loading"
    assert health(snap, now=T0 + GRACE, grace=GRACE, cap=60).result == "failure"


def test_progress_after_the_failure_turns_it_back_into_loading() -> None:
    now = T0 + GRACE + 500

    stalled = health(starting(Progress(last_progress_at=None)), now=now)
    resumed = health(starting(Progress(downloaded_bytes=1, last_progress_at=now - 5)), now=now)

    assert (stalled.result, resumed.result) == ("failure", "loading")


def test_loading_deadline_is_when_the_failure_would_come() -> None:
    assert loading_deadline(starting(), GRACE, CAP) == T0 + GRACE
    assert loading_deadline(starting(Progress(last_progress_at=T0 + 5_000)), GRACE, CAP) == (
        T0 + 5_000 + GRACE
    )
    assert loading_deadline(starting(Progress(last_progress_at=T0 + CAP)), GRACE, CAP) == T0 + CAP
    assert loading_deadline(Snapshot(Phase.READY, config_started_at=T0), GRACE, CAP) is None
    assert loading_deadline(Snapshot(Phase.STARTING), GRACE, CAP) is None


# -- crashes ---------------------------------------------------------------------------------------


def test_crash_names_the_exit_status_the_delay_the_line_and_what_to_do() -> None:
    diagnosis = Diagnosis(
        line="torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 192.00 MiB.",
        cause="The GPU ran out of memory.",
        advice="Pick a smaller preset in Set Model, or lower --gpu-memory-utilization.",
        kind="out-of-memory",
    )
    snap = Snapshot(
        Phase.CRASHED,
        config_started_at=T0,
        exit=ExitInfo(returncode=1, restart_delay_s=4.0, diagnosis=diagnosis),
    )

    verdict = health(snap, now=T0 + 30)

    assert verdict.result == "failure"
    assert verdict.message == (
        "vLLM exited with status 1 and will be restarted in 4 s. Last error: "
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 192.00 MiB. "
        "The GPU ran out of memory. "
        "Pick a smaller preset in Set Model, or lower --gpu-memory-utilization."
    )
    assert verdict.detail["exit"] == {
        "returncode": 1,
        "signal": None,
        "restart_delay_s": 4.0,
        "line": diagnosis.line,
        "cause": "out-of-memory",
        "advice": diagnosis.advice,
    }


def test_crash_by_a_signal_names_the_signal() -> None:
    info = ExitInfo(returncode=-11, restart_delay_s=0.5, diagnosis=Diagnosis("Fatal Python error"))

    verdict = health(Snapshot(Phase.CRASHED, config_started_at=T0, exit=info), now=T0)

    assert verdict.message.startswith(
        "vLLM was killed by signal 11 (SIGSEGV) and will be restarted in 1 s."
    )
    assert exit_detail(verdict, "exit")["signal"] == "SIGSEGV"


def test_a_silent_sigkill_points_at_the_out_of_memory_killer() -> None:
    info = ExitInfo(returncode=-9, restart_delay_s=60.0)

    verdict = health(Snapshot(Phase.CRASHED, config_started_at=T0, exit=info), now=T0)

    assert "killed by signal 9 (SIGKILL)" in verdict.message
    assert "restarted in 60 s" in verdict.message
    assert "out-of-memory killer" in verdict.message


def test_a_silent_crash_sends_a_person_to_the_logs() -> None:
    info = ExitInfo(returncode=3, restart_delay_s=2.0)

    verdict = health(Snapshot(Phase.CRASHED, config_started_at=T0, exit=info), now=T0)

    assert verdict.message == (
        "vLLM exited with status 3 and will be restarted in 2 s. "
        "It printed no error line; check the service logs."
    )


def test_the_last_exit_stays_in_detail_while_the_restart_loads() -> None:
    info = ExitInfo(returncode=1, restart_delay_s=1.0, diagnosis=Diagnosis("ValueError: x"))

    verdict = health(starting(exit=info), now=T0 + 5)

    assert verdict.result == "loading"
    assert exit_detail(verdict, "last_exit")["line"] == "ValueError: x"


# -- wedged, and what goes in detail ---------------------------------------------------------------


def test_wedged_says_the_api_stopped_answering_and_vllm_is_restarting() -> None:
    verdict = health(Snapshot(Phase.WEDGED, config_started_at=T0), now=T0)

    assert verdict.result == "failure"
    assert "stopped answering" in verdict.message
    assert "being restarted" in verdict.message


def test_stuck_pids_and_a_store_problem_go_into_detail() -> None:
    snap = Snapshot(
        Phase.READY, config_started_at=T0, stuck_pids=(4321, 4322), store_problem="bad field"
    )

    verdict = health(snap, now=T0)

    assert verdict.result == "success"
    assert verdict.message == READY_MESSAGE  # the running model is fine: the message stays
    assert verdict.detail["stuck_pids"] == [4321, 4322]
    assert verdict.detail["store_problem"] == "bad field"


@pytest.mark.parametrize("phase", list(Phase))
def test_every_verdict_is_json(phase: Phase) -> None:
    info = ExitInfo(returncode=-9, restart_delay_s=1.0, diagnosis=Diagnosis("x", "y", "z", "k"))
    snap = Snapshot(
        phase,
        config_started_at=T0,
        progress=Progress(1, 2.0, "Loading weights: shard 1/2.", T0),
        exit=info,
        stuck_pids=(7,),
        store_problem="p",
        model="m",
    )

    verdict = health(snap, now=T0 + 1)

    assert json.loads(json.dumps([verdict.task, verdict.detail])) == [verdict.task, verdict.detail]
    assert verdict.detail["phase"] == str(phase)


# -- a fetch of the model's files (make before break) -------------------------------------------

GB = 1_000_000_000
MOVING = FetchState("Org/Model", total=40 * GB, done=12_400_000_000, rate_bps=48_000_000.0)
SENTENCE = "Downloading Org/Model: 12.4 of 40.0 GB (31 %), 48 MB/s, about 10 min left."


def test_while_an_old_model_serves_the_api_check_keeps_its_exact_success_message() -> None:
    # given the old model ready and the new one's files coming
    snap = Snapshot(Phase.READY, config_started_at=T0, model="Org/Old",
                    fetch=Fetching(MOVING, moved_at=T0 + 5))  # fmt: skip
    # when the health is evaluated
    verdict = health(snap, now=T0 + 60)
    # then the check is the ready one, exactly, and the download is in detail.fetch
    assert (verdict.result, verdict.message) == ("success", "The vLLM API is ready")
    assert verdict.detail["model"] == "Org/Old"
    assert verdict.detail["fetch"] == {
        "model": "Org/Model",
        "done": 12_400_000_000,
        "total": 40 * GB,
        "rate_bps": 48_000_000,
        "eta_s": 575,
        "error": None,
        "message": SENTENCE,
    }


def test_with_no_old_model_the_loading_message_carries_the_download_sentence() -> None:
    snap = Snapshot(Phase.STARTING, config_started_at=T0, model="Org/Model",
                    fetch=Fetching(MOVING, moved_at=T0 + 5))  # fmt: skip
    verdict = health(snap, now=T0 + 60)
    assert verdict.result == "loading"
    assert verdict.message == f"{LOADING_MESSAGE} {SENTENCE}"


# (promise, fetch state, sentence)
SENTENCES = [
    ("before the plan is known", FetchState("Org/M"), "Downloading Org/M: preparing."),
    ("while no byte moves, no rate and no time left", FetchState("Org/M", 40 * GB, 12 * GB),
     "Downloading Org/M: 12.0 of 40.0 GB (30 %)."),
    ("a slow rate keeps a decimal, a long time is in hours",
     FetchState("Org/M", 40 * GB, 10 * GB, 4_500_000.0),
     "Downloading Org/M: 10.0 of 40.0 GB (25 %), 4.5 MB/s, about 1 h 51 min left."),
    ("the last seconds", FetchState("Org/M", 2 * GB, 1_990_000_000, 1_000_000.0),
     "Downloading Org/M: 2.0 of 2.0 GB (99 %), 1.0 MB/s, less than a minute left."),
    ("once every byte is in", FetchState("Org/M", 2 * GB, 2 * GB, 1_000_000.0),
     "Downloaded Org/M: 2.0 GB."),
    ("small files in their own unit", FetchState("Org/M", 1_500_000, 700_000, 100_000.0),
     "Downloading Org/M: 0.7 of 1.5 MB (46 %), 100 kB/s, less than a minute left."),
]  # fmt: skip


@pytest.mark.parametrize(
    ("state", "sentence"), [row[1:] for row in SENTENCES], ids=[row[0] for row in SENTENCES]
)
def test_the_download_sentence_has_a_total_a_rate_and_the_time_left(
    state: FetchState, sentence: str
) -> None:
    assert fetch_message(Fetching(state)) == sentence


# (promise, error, words the message must hold)
FAILURES = [
    ("401: a token through Set Model's environment", FetchError("unauthorized", "401"),
     ("Could not download Org/Model", "(401)", "--env HF_TOKEN=")),
    ("403 gated: accept the licence on the hub", FetchError("gated", "403"),
     ("gated", "Accept the model's terms on its page at huggingface.co")),
    ("404: check the id", FetchError("not-found", "404"),
     ("does not know this model id", "Check the model id in Set Model")),
    ("disk full: what is needed and free, and Delete Model Cache",
     FetchError("disk-full", "no space", needed=40 * GB, free=12 * GB),
     ("needs 40.0 GB more", "has 12.0 GB free", '"Delete Model Cache"')),
    ("a network failure in the fetch's own words", FetchError("network", "Connection refused"),
     ("Could not download Org/Model: Connection refused.",)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("error", "words"), [row[1:] for row in FAILURES], ids=[row[0] for row in FAILURES]
)
def test_a_failed_fetch_with_no_old_model_is_a_failure_with_the_forensics_advice(
    error: FetchError, words: tuple[str, ...]
) -> None:
    # given no old model and a fetch that failed, tried again in 8 s
    fetch = Fetching(FetchState("Org/Model", error=error), retry_in_s=8)
    verdict = health(Snapshot(Phase.STARTING, config_started_at=T0, fetch=fetch), now=T0 + 1)
    # then the health fails, says why and what to do, and when it tries again
    assert verdict.result == "failure"
    for word in words:
        assert word in verdict.message
    assert verdict.message.endswith("vllmd tries again in 8 s.")
    fetch_detail = exit_detail(verdict, "fetch")
    assert fetch_detail["error"] == {"kind": error.kind, "message": error.message}
    assert fetch_detail["message"] == verdict.message


def test_a_failed_fetch_leaves_an_old_model_serving_and_says_why_in_detail() -> None:
    fetch = Fetching(FetchState("Org/New", error=FetchError("not-found", "404")), retry_in_s=2)
    verdict = health(Snapshot(Phase.READY, model="Org/Old", fetch=fetch), now=T0)
    assert (verdict.result, verdict.message) == ("success", READY_MESSAGE)
    assert "Check the model id" in str(exit_detail(verdict, "fetch")["message"])


def test_a_fetch_that_moves_is_never_a_stall_and_one_that_stops_counts_toward_the_grace() -> None:
    # given a fetch with no old model, last moving 10 minutes before the grace would end
    def snap(moved_at: float) -> Snapshot:
        return Snapshot(Phase.STARTING, config_started_at=T0,
                        fetch=Fetching(MOVING, moved_at=moved_at))  # fmt: skip

    # then a fetch that kept moving is loading past the grace, up to the cap
    assert health(snap(T0 + GRACE + 500), now=T0 + GRACE + 600).result == "loading"
    assert health(snap(T0 + CAP - 1), now=T0 + CAP).result == "failure"
    # and one that stopped moving fails the grace after it last moved
    stopped = snap(T0 + 600)
    assert loading_deadline(stopped, GRACE, CAP) == T0 + 600 + GRACE
    assert health(stopped, now=T0 + 600 + GRACE - 1).result == "loading"
    assert health(stopped, now=T0 + 600 + GRACE).detail["timeout"] == "no-progress"
