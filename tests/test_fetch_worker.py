"""The fetch worker (``python -m vllmd.fetch``) against the test hub: plan, bytes, records, errors.

Each test runs the real worker as a subprocess with a clean environment pointed at the hub.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.fetch_support import (
    add_model,
    mount_tmpfs,
    read_files,
    unmount,
    worker_argv,
    worker_env,
)
from tests.hub import SERVER_ERROR, Hub
from vllmd.core.fetchplan import Target
from vllmd.state.fetched import is_complete, read_record, snapshot_path


def _run(
    hub: Hub, tmp_path: Path, *targets: str, margin: int = 0, models: Path | None = None, **env: str
) -> tuple[int, list[dict[str, Any]], str]:
    """Run the worker to its end: exit code, stdout's events (each line must be JSON), stderr."""
    done = subprocess.run(
        worker_argv(models or tmp_path / "models", *targets, margin=margin),
        env=worker_env(hub, tmp_path, **env),
        capture_output=True,
        timeout=60,
        check=False,
    )
    lines = done.stdout.decode().splitlines()
    return done.returncode, [json.loads(line) for line in lines], done.stderr.decode()


def test_a_fetch_plans_the_total_then_brings_exactly_what_vllm_reads(
    hub: Hub, tmp_path: Path
) -> None:
    # Given a sharded model on the hub, with files vLLM does not read
    files = add_model(hub, "org/m")
    wanted = read_files(files)
    # When the worker fetches it
    code, events, _ = _run(hub, tmp_path, "model:org/m")
    # Then the plan came first with the total of what vLLM reads; only the index, which the
    # plan reads to know the shards, was present
    assert code == 0
    total = sum(len(v) for v in wanted.values())
    index = len(files["model.safetensors.index.json"])
    assert events[0] == {"event": "plan", "total": total, "present": index, "files": len(wanted)}
    assert events[-1] == {"event": "done", "total": total}
    assert all(e["event"] == "progress" for e in events[1:-1])
    # And every file vLLM reads is in the snapshot, whole; nothing else was downloaded
    commit = hub.commit("org/m")
    models = tmp_path / "models"
    for path, data in wanted.items():
        assert snapshot_path(models, "org/m", commit, path).read_bytes() == data
    fetched = {r.path.rsplit("/resolve/", 1)[1].split("/", 1)[1] for r in hub.downloads()}
    assert fetched == set(wanted)
    # And the record says so, and is_complete agrees
    record = read_record(models, Target("org/m", None, "model"))
    assert record is not None and record.commit == commit
    assert sorted(record.files) == sorted((p, len(d)) for p, d in wanted.items())
    assert is_complete(models, [Target("org/m", None, "model")])
    # And vLLM's offline lookup finds the branch
    assert (models / "models--org--m" / "refs" / "main").read_text() == commit


def test_a_second_fetch_finds_everything_present_and_moves_nothing(
    hub: Hub, tmp_path: Path
) -> None:
    files = read_files(add_model(hub, "org/m"))
    assert _run(hub, tmp_path, "model:org/m")[0] == 0
    downloads = len(hub.downloads())
    code, events, _ = _run(hub, tmp_path, "model:org/m")
    total = sum(len(v) for v in files.values())
    assert code == 0
    assert events == [
        {"event": "plan", "total": total, "present": total, "files": len(files)},
        {"event": "done", "total": total},
    ]
    assert len(hub.downloads()) == downloads


def test_the_tokenizer_and_the_draft_are_fetched_and_recorded_each(
    hub: Hub, tmp_path: Path
) -> None:
    add_model(hub, "org/m")
    add_model(hub, "org/draft", shards=1)
    hub.add_repo("org/tok", {"tokenizer.json": b"{}", "model.safetensors": b"\0" * 4096})
    code, events, _ = _run(hub, tmp_path, "model:org/m", "tokenizer:org/tok", "draft:org/draft")
    assert code == 0, events
    models = tmp_path / "models"
    targets = [
        Target("org/m", None, "model"),
        Target("org/tok", None, "tokenizer"),
        Target("org/draft", None, "draft"),
    ]
    assert is_complete(models, targets)
    # And the tokenizer repository's weights were not fetched: a tokenizer takes none
    assert [r.path for r in hub.downloads() if r.path.startswith("/org/tok/")] == [
        f"/org/tok/resolve/{hub.commit('org/tok')}/tokenizer.json"
    ]


def test_a_target_with_nothing_vllm_reads_is_complete_once_fetched(
    hub: Hub, tmp_path: Path
) -> None:
    # Given a tokenizer repository that holds no file a tokenizer loader reads
    add_model(hub, "org/m")
    hub.add_repo("org/odd", {"README.md": b"# only this"})
    code, _, _ = _run(hub, tmp_path, "model:org/m", "tokenizer:org/odd")
    # Then the fetch completes and stays complete (no refetch at every reconcile)
    assert code == 0
    targets = [Target("org/m", None, "model"), Target("org/odd", None, "tokenizer")]
    assert is_complete(tmp_path / "models", targets)


def test_progress_counts_bytes_on_disk_while_a_slow_download_moves(
    hub: Hub, tmp_path: Path
) -> None:
    # Given a hub that serves 8 MB/s per connection and one 32 MiB shard (huggingface_hub writes
    # to disk in 10 MiB pieces)
    add_model(hub, "org/m", shards=1, size=32 << 20)
    hub.rate_bps = 8_000_000
    code, events, _ = _run(hub, tmp_path, "model:org/m")
    assert code == 0
    progress = [e for e in events if e["event"] == "progress"]
    # Then several progress lines came, growing, each with the total
    assert len(progress) >= 3
    dones = [e["done"] for e in progress]
    assert dones == sorted(dones) and 0 < dones[0] < events[0]["total"]
    assert {e["total"] for e in progress} == {events[0]["total"]}


def test_a_killed_fetch_keeps_its_partial_file_and_the_next_resumes_it(
    hub: Hub, tmp_path: Path
) -> None:
    # Given a slow hub and one 24 MiB shard (huggingface_hub writes in 10 MiB pieces)
    files = add_model(hub, "org/m", shards=1, size=24 << 20)
    hub.rate_bps = 8_000_000
    models = tmp_path / "models"
    proc = subprocess.Popen(
        worker_argv(models, "model:org/m"),
        env=worker_env(hub, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # When it is killed once more than 10 MiB is on disk
        partial = models / "models--org--m" / "blobs"
        wait_for(
            lambda: any(
                p.name.endswith(".incomplete") and p.stat().st_size >= 10 << 20
                for p in partial.glob("*")
            ),
            timeout=30,
        )
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
    kept = sum(p.stat().st_size for p in partial.glob("*.incomplete"))
    assert kept >= 10 << 20
    # Then the next run says so in its plan, asks only for the rest, and ends whole
    hub.rate_bps = None
    code, events, _ = _run(hub, tmp_path, "model:org/m")
    assert code == 0
    assert events[0]["present"] >= kept
    name = "model-00001-of-00001.safetensors"
    last = hub.downloads(name)[-1]
    assert last.range == f"bytes={kept}-" and last.status == 206
    commit = hub.commit("org/m")
    assert snapshot_path(models, "org/m", commit, name).read_bytes() == files[name]
    assert list(partial.glob("*.incomplete")) == []


NOT_FOUND_CASES = [
    ("model:org/none", "RepositoryNotFound"),
    ("model:org/m@v9", "RevisionNotFound"),
]


@pytest.mark.parametrize(("target", "why"), NOT_FOUND_CASES)
def test_an_unknown_model_or_revision_is_not_found(
    hub: Hub, tmp_path: Path, target: str, why: str
) -> None:
    add_model(hub, "org/m")
    code, events, _ = _run(hub, tmp_path, target)
    assert code == 1
    assert [e["event"] for e in events] == ["error"], why
    assert events[0]["kind"] == "not-found"
    assert "Check the model id" in events[0]["message"]
    assert hub.downloads() == []


def test_a_gated_model_without_a_token_says_to_add_one(hub: Hub, tmp_path: Path) -> None:
    add_model(hub, "org/gated")
    hub.gate("org/gated", "hf_right")
    code, events, _ = _run(hub, tmp_path, "model:org/gated")
    assert (code, events[0]["kind"]) == (1, "gated")
    assert "HF_TOKEN" in events[0]["message"] and "(401)" in events[0]["message"]


def test_a_gated_model_with_a_token_without_access_says_to_request_it(
    hub: Hub, tmp_path: Path
) -> None:
    add_model(hub, "org/gated")
    hub.gate("org/gated", "hf_right")
    code, events, _ = _run(hub, tmp_path, "model:org/gated", HF_TOKEN="hf_wrong")
    assert (code, events[0]["kind"]) == (1, "gated")
    assert "Request access" in events[0]["message"] and "(403)" in events[0]["message"]
    assert "hf_wrong" not in events[0]["message"]


def test_a_gated_model_with_the_right_token_is_fetched(hub: Hub, tmp_path: Path) -> None:
    add_model(hub, "org/gated")
    hub.gate("org/gated", "hf_right")
    code, events, _ = _run(hub, tmp_path, "model:org/gated", HF_TOKEN="hf_right")
    assert (code, events[-1]["event"]) == (0, "done")
    assert {r.token for r in hub.log} == {"hf_right"}


def test_weights_from_a_cdn_come_without_the_token_and_resume_there(
    hub: Hub, tmp_path: Path
) -> None:
    # Given a gated model whose weights the hub redirects to another origin, as huggingface.co
    # does to its CDN, and a connection that drops there once
    files = read_files(add_model(hub, "org/gated", shards=1, size=12 << 20))
    hub.gate("org/gated", "hf_right")
    hub.cdn = True
    name = "model-00001-of-00001.safetensors"
    hub.drop_once("org/gated", name, 11 << 20)
    # When the worker fetches it with the token
    code, events, _ = _run(hub, tmp_path, "model:org/gated", HF_TOKEN="hf_right")
    # Then the weights came from the CDN without the token, the second time with a Range
    assert (code, events[-1]["event"]) == (0, "done")
    cdn = [r for r in hub.log if r.path.startswith("/_cdn/")]
    assert cdn and {r.token for r in cdn} == {None}
    assert [r.status for r in cdn] == [200, 206]
    # And the hub itself always saw the token
    assert {r.token for r in hub.log if not r.path.startswith("/_cdn/")} == {"hf_right"}
    snapshot = snapshot_path(tmp_path / "models", "org/gated", hub.commit("org/gated"), name)
    assert snapshot.read_bytes() == files[name]


def test_a_bad_token_is_unauthorized(hub: Hub, tmp_path: Path) -> None:
    from tests.hub import BAD_TOKEN

    add_model(hub, "org/m")
    hub.refuse("org/m", BAD_TOKEN)
    code, events, _ = _run(hub, tmp_path, "model:org/m", HF_TOKEN="hf_bad")
    assert (code, events[0]["kind"]) == (1, "unauthorized")
    assert "valid access token" in events[0]["message"]


def test_a_hub_that_fails_or_cannot_be_reached_is_a_network_error(hub: Hub, tmp_path: Path) -> None:
    add_model(hub, "org/m")
    hub.refuse("org/m", SERVER_ERROR)
    code, events, _ = _run(hub, tmp_path, "model:org/m", HF_HUB_ETAG_TIMEOUT="2")
    assert (code, events[0]["kind"]) == (1, "network")
    hub.refuse("org/m", None)
    hub.stop()
    code, events, _ = _run(hub, tmp_path, "model:org/m")
    assert (code, events[0]["kind"]) == (1, "network")
    assert "internet connection" in events[0]["message"]


def test_a_fetch_with_the_offline_switch_set_says_so(hub: Hub, tmp_path: Path) -> None:
    add_model(hub, "org/m")
    code, events, _ = _run(hub, tmp_path, "model:org/m", HF_HUB_OFFLINE="1")
    assert (code, events[0]["kind"]) == (1, "other")
    assert "HF_HUB_OFFLINE" in events[0]["message"]
    assert hub.log == []


def test_a_fetch_that_does_not_fit_is_refused_before_a_byte_moves(hub: Hub, tmp_path: Path) -> None:
    # Given a model of 2 MiB and a margin far larger than the disk's free space (by a TiB: other
    # tests free space on the same disk while this one runs)
    add_model(hub, "org/m")
    free = shutil.disk_usage(tmp_path).free
    code, events, _ = _run(hub, tmp_path, "model:org/m", margin=free + (1 << 40))
    # Then the one line says how much is needed and free, and what to do
    assert code == 1
    assert [e["event"] for e in events] == ["error"]
    error = events[0]
    assert error["kind"] == "disk-full"
    assert error["needed"] > error["free"] > 0
    assert "Delete Model Cache" in error["message"]
    # And no weight was downloaded (only the index, which the plan reads)
    assert {r.path.rsplit("/", 1)[1] for r in hub.downloads()} <= {"model.safetensors.index.json"}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs for the model cache, unmounted after the test (needs root)."""
    folder = tmp_path / "small"
    if not mount_tmpfs(folder, 24 << 20):
        pytest.skip("mounting a tmpfs needs root (and a runtime that allows mount)")
    try:
        yield folder
    finally:
        unmount(folder)


def test_a_model_larger_than_a_small_disk_is_refused_with_the_figures(
    hub: Hub, tmp_path: Path, small_disk: Path
) -> None:
    # Given a 32 MiB model and a 24 MiB volume
    add_model(hub, "org/m", shards=2, size=16 << 20)
    # When the worker is asked to fetch it there, with no margin
    code, events, _ = _run(hub, tmp_path, "model:org/m", models=small_disk / "models")
    # Then it refuses with what is needed and free, and fetched no weight
    assert code == 1
    assert [(e["event"], e["kind"]) for e in events] == [("error", "disk-full")]
    assert events[0]["needed"] >= 32 << 20 > events[0]["free"]
    assert not any("safetensors" in r.path and "index" not in r.path for r in hub.downloads())


def test_a_disk_that_fills_during_the_fetch_is_a_disk_full_error(
    hub: Hub, tmp_path: Path, small_disk: Path
) -> None:
    # Given a 16 MiB model on a slow hub and a 24 MiB volume
    add_model(hub, "org/m", shards=1, size=16 << 20)
    hub.rate_bps = 8_000_000
    proc = subprocess.Popen(
        worker_argv(small_disk / "models", "model:org/m"),
        env=worker_env(hub, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        plan = json.loads(proc.stdout.readline())
        assert plan["event"] == "plan"
        # When something else fills the volume once the plan has passed the check
        free = shutil.disk_usage(small_disk).free
        (small_disk / "filler").write_bytes(b"\0" * (free - (1 << 20)))
        rest = proc.stdout.read()
        assert proc.wait(timeout=60) == 1
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    # Then the worker says the disk is full, with the figures
    error = json.loads(rest.decode().splitlines()[-1])
    assert (error["event"], error["kind"]) == ("error", "disk-full")
    assert error["needed"] > error["free"]
    assert "Delete Model Cache" in error["message"]


def test_stdout_carries_only_event_lines(hub: Hub, tmp_path: Path) -> None:
    # Given a fetch whose connection drops (huggingface_hub then logs a warning and retries)
    files = add_model(hub, "org/m", shards=1, size=12 << 20)
    hub.drop_once("org/m", "model-00001-of-00001.safetensors", 11 << 20)
    code, events, stderr = _run(hub, tmp_path, "model:org/m")
    # Then every stdout line is one JSON event, and the library's words went to stderr
    assert code == 0
    assert {e["event"] for e in events} <= {"plan", "progress", "done"}
    assert "resume" in stderr.lower()
    name = "model-00001-of-00001.safetensors"
    path = snapshot_path(tmp_path / "models", "org/m", hub.commit("org/m"), name)
    assert path.read_bytes() == files[name]


def test_a_removed_model_is_no_longer_complete(hub: Hub, tmp_path: Path) -> None:
    add_model(hub, "org/m")
    assert _run(hub, tmp_path, "model:org/m")[0] == 0
    models = tmp_path / "models"
    target = Target("org/m", None, "model")
    assert is_complete(models, [target])
    # When Delete Model Cache removes the model's folder (the record stays)
    shutil.rmtree(models / "models--org--m")
    # Then it is incomplete
    assert not is_complete(models, [target])
    assert read_record(models, target) is not None
    # And a target never fetched is incomplete
    assert not is_complete(models, [Target("org/other", None, "model")])


def _download_as_vllm_did(hub: Hub, tmp_path: Path, models: Path, repo_id: str) -> None:
    """Fill the cache the way vLLM 0.32 downloads a model itself (snapshot_download)."""
    script = (
        "import sys; from huggingface_hub import snapshot_download; "
        "snapshot_download(sys.argv[1], cache_dir=sys.argv[2], "
        "allow_patterns=['*.json', '*.safetensors'])"
    )
    subprocess.run(
        [sys.executable, "-c", script, repo_id, str(models)],
        env=worker_env(hub, tmp_path),
        check=True,
        capture_output=True,
        timeout=60,
    )


def test_a_model_an_earlier_download_left_whole_starts_without_the_hub(
    hub: Hub, tmp_path: Path
) -> None:
    # Given a model that vLLM downloaded itself before vllmd fetched (no record of ours)
    files = add_model(hub, "org/m")
    models = tmp_path / "models"
    _download_as_vllm_did(hub, tmp_path, models, "org/m")
    assert not is_complete(models, [Target("org/m", None, "model")])
    # When the worker runs while the hub cannot be reached
    hub.stop()
    code, events, stderr = _run(hub, tmp_path, "model:org/m")
    # Then the cached copy is recorded complete, and the log says why
    assert code == 0, events
    assert [e["event"] for e in events] == ["plan", "done"]
    assert events[0]["total"] == events[0]["present"] == sum(map(len, read_files(files).values()))
    assert is_complete(models, [Target("org/m", None, "model")])
    assert "cannot be reached" in stderr


def test_a_model_an_earlier_download_left_half_done_still_needs_the_hub(
    hub: Hub, tmp_path: Path
) -> None:
    # Given a cached model one of whose shards is gone
    add_model(hub, "org/m")
    models = tmp_path / "models"
    _download_as_vllm_did(hub, tmp_path, models, "org/m")
    snapshots = models / "models--org--m" / "snapshots"
    (shard,) = snapshots.glob("*/model-00002-of-00002.safetensors")
    shard.unlink()
    # When the worker runs while the hub cannot be reached
    hub.stop()
    code, events, _ = _run(hub, tmp_path, "model:org/m")
    # Then it is a network error, and nothing is recorded
    assert (code, events[0]["kind"]) == (1, "network")
    assert not is_complete(models, [Target("org/m", None, "model")])
