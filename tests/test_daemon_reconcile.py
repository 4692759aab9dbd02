"""Reconcile and launch (CONTRACT §2.3, §2.4, §2.7) with the real daemon and the stand-in vLLM."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import Volumes, pid_alive, wait_for, write_json_atomic


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


def test_fixed_flags_in_a_hand_edited_store_are_dropped_with_a_warning(
    volumes: Volumes, start_daemon
) -> None:
    volumes.set_args(*volumes.standin_args(), "--port", "1", "--api-key=mine")
    daemon = start_daemon("--auth", "flag")
    record = daemon.wait_starts(1)[0]
    assert "mine" not in record["argv"]
    assert record["argv"][record["argv"].index("--port") + 1] == str(daemon.port)
    daemon.wait_log("WARNING reconcile: ignoring --port, --api-key")


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


def test_rewriting_the_same_content_does_not_restart(volumes: Volumes, start_daemon) -> None:
    volumes.set_args(*volumes.standin_args())
    daemon = start_daemon()
    daemon.wait_starts(1)
    daemon.wait_health("success")
    for _ in range(3):
        volumes.set_args(*volumes.standin_args())
    # A marker change after the rewrites: once it is acted on, the rewrites were seen too.
    volumes.set_args(*volumes.standin_args("org/marker"))
    daemon.wait_starts(2)
    assert [r["argv"][2] for r in volumes.starts()] == ["org/model", "org/marker"]


def test_a_burst_of_writes_ends_in_the_last_content_with_at_most_two_starts(
    volumes: Volumes, start_daemon
) -> None:
    volumes.set_args(*volumes.standin_args("org/m0"))
    daemon = start_daemon()
    daemon.wait_starts(1)
    daemon.wait_health("success")
    for i in range(1, 31):
        volumes.set_args(*volumes.standin_args(f"org/m{i}"))
    wait_for(lambda: volumes.starts()[-1]["argv"][2] == "org/m30", what="the last write running")
    daemon.wait_health("success")
    assert 2 <= len(volumes.starts()) <= 3  # the first start, then at most two for the burst


def test_removing_the_model_stops_vllm_and_idles(volumes: Volumes, start_daemon) -> None:
    volumes.set_args(*volumes.standin_args())
    daemon = start_daemon()
    record = daemon.wait_starts(1)[0]
    volumes.set_args()  # an empty serveArgs: no model
    wait_for(lambda: not pid_alive(record["pid"]), what="vLLM stopped")
    health = daemon.wait_health("failure")
    assert health["task"]["action"] == "set-model"


def test_invalid_store_keeps_the_last_good_launch_and_the_file(
    volumes: Volumes, start_daemon
) -> None:
    volumes.set_args(*volumes.standin_args())
    daemon = start_daemon()
    record = daemon.wait_starts(1)[0]
    for bad in ('{"serveArgs": "org/x"}', "", '{"serveArgs": ["org/x", '):
        volumes.store.write_text(bad)  # in place: also what a reader sees mid-write
        daemon.wait_log(str(volumes.store))
        assert volumes.store.read_text() == bad  # never rewritten or deleted
    wait_for(lambda: "$.serveArgs" in daemon.stderr(), what="the field named")
    assert pid_alive(record["pid"]) and len(volumes.starts()) == 1
    volumes.set_args(*volumes.standin_args("org/fixed"))  # the next valid write is picked up
    assert daemon.wait_starts(2)[1]["argv"][2] == "org/fixed"


def test_empty_store_at_start_is_invalid_not_no_model(volumes: Volumes, start_daemon) -> None:
    volumes.data.mkdir(parents=True)
    volumes.store.write_text("")
    daemon = start_daemon()
    daemon.wait_log("the file is empty")
    assert volumes.store.read_text() == ""


def test_deleted_and_recreated_data_folder_rearms_the_watch(volumes: Volumes, start_daemon) -> None:
    volumes.set_args(*volumes.standin_args("org/one"))
    daemon = start_daemon()
    daemon.wait_starts(1)
    shutil.rmtree(volumes.data)
    daemon.wait_health("failure")  # no store: no model
    # Deadlines under the 5 s rescan: only the re-armed watch can be what sees these.
    volumes.set_args(*volumes.standin_args("org/two"))
    assert daemon.wait_starts(2, timeout=4)[1]["argv"][2] == "org/two"
    volumes.set_args(*volumes.standin_args("org/three"))
    assert daemon.wait_starts(3, timeout=4)[2]["argv"][2] == "org/three"


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


def test_unknown_store_keys_survive_the_daemon(volumes: Volumes, start_daemon) -> None:
    volumes.data.mkdir(parents=True)
    content = {"serveArgs": [], "startos": {"keep": True}}
    write_json_atomic(volumes.store, content)
    daemon = start_daemon()
    daemon.wait_health("failure")
    assert json.loads(Path(volumes.store).read_text()) == content


def test_the_periodic_rescan_catches_what_no_event_reports(volumes: Volumes, start_daemon) -> None:
    # store.json is a link to a file in a folder nobody watches: editing the target raises no
    # event in DATA, so only the rescan can see it.
    elsewhere = volumes.root / "elsewhere"
    elsewhere.mkdir()
    write_json_atomic(elsewhere / "store.json", {"serveArgs": volumes.standin_args("org/one")})
    volumes.data.mkdir(parents=True)
    volumes.store.symlink_to(elsewhere / "store.json")
    daemon = start_daemon()
    daemon.wait_starts(1)
    write_json_atomic(elsewhere / "store.json", {"serveArgs": volumes.standin_args("org/two")})
    assert daemon.wait_starts(2, timeout=15)[1]["argv"][2] == "org/two"


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
