"""Loading progress: vLLM's own lines, and the growth of the model cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllmd.core.health import Progress
from vllmd.core.progress import DownloadMeter, ProgressTracker, loading_step

FIXTURES = Path(__file__).parent / "fixtures" / "vllm-logs"
GB = 1_000_000_000


# -- vLLM's lines ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "step"),
    [
        (
            "Loading safetensors checkpoint shards:  38% Completed | 3/8 [00:04<00:06,  1.31s/it]",
            "Loading weights: shard 3/8.",
        ),
        (
            "(EngineCore_DP0 pid=212) Loading safetensors checkpoint shards: 100% Completed "
            "| 8/8 [00:10<00:00,  1.27s/it]",
            "Loading weights: shard 8/8.",
        ),
        (
            "Loading pt checkpoint shards:   0% Completed | 0/2 [00:00<?, ?it/s]",
            "Loading weights: shard 0/2.",
        ),
        (
            "(VllmWorker rank=0 pid=51) Multi-thread loading shards:  50% Completed | 5/10 "
            "[00:03<00:03,  1.52it/s]",
            "Loading weights: shard 5/10.",
        ),
        (
            "Loading np_cache checkpoint shards:  25% Completed | 1/4 [00:01<00:03,  1.02s/it]",
            "Loading weights: shard 1/4.",
        ),
        (
            "INFO 10-14 09:12:36 [default_loader.py:267] Loading weights took 10.21 seconds",
            "Weights loaded; preparing the engine.",
        ),
        (
            "INFO 10-14 09:12:44 [backends.py:559] Dynamo bytecode transform time: 6.71 s",
            "Compiling the model.",
        ),
        (
            "Capturing CUDA graphs (mixed prefill-decode, PIECEWISE):   0%|          | 0/67 "
            "[00:00<?, ?it/s]\rCapturing CUDA graphs (mixed prefill-decode, PIECEWISE):  45%|"
            "████▍     | 30/67 [00:01<00:02, 17.61it/s]",
            "Capturing CUDA graphs: 30/67.",
        ),
        (
            "INFO 10-14 09:13:40 [core.py:210] init engine (profile, create kv cache, warmup "
            "model) took 62.21 seconds",
            "Engine ready; starting the API server.",
        ),
    ],
)
def test_loading_step_reads_vllm_progress_lines(line: str, step: str) -> None:
    assert loading_step(line) == step


@pytest.mark.parametrize(
    "line",
    [
        "",
        "INFO 10-14 09:12:07 [api_server.py:1839] vLLM API server version 0.11.0",
        "INFO 10-14 09:12:25 [weight_utils.py:392] Using model weights format ['*.safetensors']",
        "Loading checkpoint shards is a phrase in a sentence",
        'INFO:     127.0.0.1:40512 - "GET /health HTTP/1.1" 200 OK',
    ],
)
def test_other_lines_are_not_steps(line: str) -> None:
    assert loading_step(line) is None


def test_the_steps_of_a_recorded_start_come_in_order() -> None:
    tracker = ProgressTracker()
    steps: list[str | None] = []

    for t, line in enumerate((FIXTURES / "cuda-oom.log").read_text().split("\n")):
        if tracker.feed(float(t), line):
            steps.append(tracker.progress().loading)

    assert steps[:2] == ["Loading weights: shard 0/8.", "Loading weights: shard 1/8."]
    assert "Loading weights: shard 8/8." in steps
    assert steps.index("Weights loaded; preparing the engine.") > steps.index(
        "Loading weights: shard 8/8."
    )
    assert "Compiling the model." in steps
    assert steps[-1] == "Capturing CUDA graphs: 22/67."


# -- the download meter ----------------------------------------------------------------------------


def test_the_meter_knows_nothing_before_two_samples() -> None:
    meter = DownloadMeter()
    meter.reset(0.0)

    meter.sample(0.0, 5 * GB)

    assert (meter.downloaded_bytes, meter.rate_bps, meter.last_progress_at) == (None, None, None)


def test_downloaded_bytes_are_the_growth_since_the_reset() -> None:
    meter = DownloadMeter()
    meter.reset(0.0)

    meter.sample(0.0, 5 * GB)  # other models already in the cache
    meter.sample(5.0, 5 * GB + 240_000_000)
    meter.sample(10.0, 5 * GB + 480_000_000)

    assert meter.downloaded_bytes == 480_000_000
    assert meter.rate_bps == pytest.approx(48_000_000.0)
    assert meter.last_progress_at == 10.0


def test_a_shrinking_cache_does_not_hide_what_was_downloaded() -> None:
    meter = DownloadMeter()
    meter.reset(0.0)
    meter.sample(0.0, 50 * GB)
    meter.sample(5.0, 51 * GB)

    meter.sample(10.0, 1 * GB)  # Delete Model Cache removed another model
    meter.sample(15.0, 2 * GB)

    assert meter.downloaded_bytes == 2 * GB
    assert meter.last_progress_at == 15.0


def test_the_rate_covers_only_the_recent_window() -> None:
    meter = DownloadMeter(window_s=20.0)
    meter.reset(0.0)
    meter.sample(0.0, 0)
    meter.sample(10.0, 10 * GB)  # a fast start…

    for t in range(15, 65, 5):  # …then 1 MB every 5 s
        meter.sample(float(t), 10 * GB + (t - 10) // 5 * 1_000_000)

    assert meter.rate_bps == pytest.approx(200_000.0)


def test_a_stalled_download_has_a_zero_rate_and_keeps_its_last_progress_time() -> None:
    meter = DownloadMeter(window_s=20.0)
    meter.reset(0.0)
    meter.sample(0.0, 0)
    meter.sample(5.0, GB)

    for t in range(10, 100, 5):
        meter.sample(float(t), GB)

    assert meter.rate_bps == 0.0
    assert meter.downloaded_bytes == GB
    assert meter.last_progress_at == 5.0


def test_a_slow_walk_still_gives_a_rate_from_the_previous_sample() -> None:
    meter = DownloadMeter(window_s=20.0)
    meter.reset(0.0)
    meter.sample(0.0, 0)

    meter.sample(60.0, 6 * GB)  # walking the tree took a minute

    assert meter.rate_bps == pytest.approx(100_000_000.0)


def test_reset_starts_afresh_and_ignores_a_sample_from_before_it() -> None:
    meter = DownloadMeter()
    meter.reset(0.0)
    meter.sample(0.0, 0)
    meter.sample(5.0, GB)

    meter.reset(100.0)
    meter.sample(99.0, 7 * GB)  # a walk that began before the new launch
    meter.sample(100.0, 2 * GB)
    meter.sample(105.0, 3 * GB)

    assert meter.downloaded_bytes == GB
    assert meter.last_progress_at == 105.0


# -- the tracker -----------------------------------------------------------------------------------


def test_the_tracker_combines_download_and_step_into_progress() -> None:
    tracker = ProgressTracker()
    tracker.reset(0.0)
    tracker.sample(0.0, 0)
    tracker.sample(10.0, 480_000_000)

    changed = tracker.feed(12.0, "Loading safetensors checkpoint shards:  25% Completed | 1/4 [..]")

    assert changed
    assert tracker.progress() == Progress(
        downloaded_bytes=480_000_000,
        download_rate_bps=48_000_000.0,
        loading="Loading weights: shard 1/4.",
        last_progress_at=12.0,
    )


def test_the_same_step_again_is_not_a_change() -> None:
    tracker = ProgressTracker()
    line = "Loading safetensors checkpoint shards:  25% Completed | 1/4 [00:01<00:03, 1.0s/it]\n"

    assert tracker.feed(1.0, line)
    assert not tracker.feed(2.0, line)
    assert not tracker.feed(3.0, "INFO nothing to see\n")
    assert tracker.progress().last_progress_at == 1.0


def test_a_chunk_of_several_lines_reports_its_last_step() -> None:
    tracker = ProgressTracker()
    chunk = (
        "Loading safetensors checkpoint shards:  25% Completed | 1/4 [..]\n"
        "Loading safetensors checkpoint shards:  50% Completed | 2/4 [..]\n"
        "INFO 10-14 09:12:07 [x.py:1] something else\n"
    )

    tracker.feed(1.0, chunk)

    assert tracker.progress().loading == "Loading weights: shard 2/4."


def test_a_crash_restart_clears_the_step_but_keeps_the_download() -> None:
    tracker = ProgressTracker()
    tracker.reset(0.0)
    tracker.sample(0.0, 0)
    tracker.sample(5.0, GB)
    tracker.feed(6.0, "Loading safetensors checkpoint shards:  25% Completed | 1/4 [..]")

    tracker.restarted()

    progress = tracker.progress()
    assert progress.loading is None
    assert progress.downloaded_bytes == GB
    assert progress.last_progress_at == 6.0


def test_a_new_configuration_clears_everything() -> None:
    tracker = ProgressTracker()
    tracker.reset(0.0)
    tracker.sample(0.0, 0)
    tracker.sample(5.0, GB)
    tracker.feed(6.0, "Loading safetensors checkpoint shards:  25% Completed | 1/4 [..]")

    tracker.reset(10.0)

    assert tracker.progress() == Progress()
