"""Reconcile and launch (CONTRACT §2.3, §2.4, §2.7) with the real daemon and the stand-in vLLM."""

from __future__ import annotations

from conftest import Volumes, pid_alive, wait_for


def test_no_model_means_nothing_runs(volumes: Volumes, start_daemon) -> None:
    daemon = start_daemon()
    health = daemon.wait_health("failure")
    assert health["message"] == 'No model selected. Run the "Set Model" action.'
    assert volumes.starts() == []
    assert (volumes.data / "models").is_dir() and volumes.run.is_dir()  # created at start


def test_launch_argv_and_environment_are_the_contracts(volumes: Volumes, start_daemon) -> None:
    volumes.set_args(*volumes.standin_args("org/m", "--max-model-len", "64"),
                     serveEnv=[{"name": "HF_TOKEN", "value": "hf_x"},
                               {"name": "VLLM_NO_USAGE_STATS", "value": "0"}])  # fmt: skip
    daemon = start_daemon("--auth", "flag")
    record = daemon.wait_starts(1)[0]
    key = volumes.key()
    assert record["argv"][1:] == [
        "serve", "org/m", "--fake-record", str(volumes.record), "--max-model-len", "64",
        "--no-enable-log-requests", "--shutdown-timeout", "5",
        "--disable-access-log-for-endpoints", "/health",
        "--host", "127.0.0.1", "--port", str(daemon.port),
        "--download-dir", str(volumes.data / "models"), "--api-key", key,
    ]  # fmt: skip
    env = record["env"]
    assert env["HF_HUB_CACHE"] == str(volumes.data / "models")
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["HF_HUB_VERBOSITY"] == "info"
    assert env["VLLM_CACHE_ROOT"] == str(volumes.data / "cache" / "vllm")
    assert env["HF_TOKEN"] == "hf_x"
    assert env["VLLM_NO_USAGE_STATS"] == "1"
    assert "hf_x" not in daemon.output()


def test_a_changed_store_restarts_vllm_with_the_new_arguments(
    volumes: Volumes, start_daemon
) -> None:
    volumes.set_args(*volumes.standin_args("org/one"))
    daemon = start_daemon()
    first = daemon.wait_starts(1)[0]
    volumes.set_args(*volumes.standin_args("org/two"))
    second = daemon.wait_starts(2)[1]
    assert second["argv"][2] == "org/two"
    wait_for(lambda: not pid_alive(first["pid"]), what="the old vLLM gone")
    assert first["pgid"] == first["pid"] and first["sid"] == first["pid"]  # own session, group


def test_polling_fallback_still_sees_changes(volumes: Volumes, start_daemon) -> None:
    volumes.set_args(*volumes.standin_args("org/one"))
    daemon = start_daemon(env={"WATCHFILES_FORCE_POLLING": "1"})
    daemon.wait_starts(1)
    volumes.set_args(*volumes.standin_args("org/two"))
    assert daemon.wait_starts(2)[1]["argv"][2] == "org/two"
    # A second write within the same second (the poller's mtimes are whole seconds), seen well
    # before the 5 s rescan.
    volumes.set_args(*volumes.standin_args("org/333"))
    assert daemon.wait_starts(3, timeout=3)[2]["argv"][2] == "org/333"


def test_serve_env_secrets_are_masked_in_vllms_output(volumes: Volumes, start_daemon) -> None:
    secret = "hf_AbCdEf0123456789"
    volumes.set_args(*volumes.standin_args("org/m", "--fake-print", f"HF token: {secret}",
                                           "--hf-token", "hf_flag_value_42"),
                     serveEnv=[{"name": "HF_TOKEN", "value": secret}])  # fmt: skip
    daemon = start_daemon()
    daemon.wait_health("success")
    wait_for(lambda: "HF token: ***" in daemon.stdout(), what="the masked line")
    output = daemon.output()
    assert secret not in output and "hf_flag_value_42" not in output
