"""The desired launch (CONTRACT §2.4): argv and environment, fixed flags never from the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllmd.core.launch import (
    Launch,
    model_of,
    plan_launch,
    secrets_of,
    shown_argv,
    split_fixed_flags,
)
from vllmd.settings import Settings, SettingsError, settings_from
from vllmd.state.store import EnvVar, Store

SETTINGS = Settings(data=Path("/d"), public=Path("/p"), run_dir=Path("/r"), auth="flag")
KEY = "A" * 22


def test_no_store_or_empty_serve_args_means_no_launch() -> None:
    assert plan_launch(None, KEY, SETTINGS, {}).launch is None
    assert plan_launch(Store(), KEY, SETTINGS, {}).launch is None


def test_argv_is_exactly_the_contracts() -> None:
    store = Store(serveArgs=("org/m", "--max-model-len", "4096"))
    launch = plan_launch(store, KEY, SETTINGS, {}).launch
    assert launch is not None
    assert launch.argv == (
        "vllm", "serve", "org/m", "--max-model-len", "4096", "--no-enable-log-requests",
        "--shutdown-timeout", "5", "--disable-access-log-for-endpoints", "/health",
        "--host", "0.0.0.0", "--port", "8000", "--download-dir", "/d/models", "--api-key", KEY,
    )  # fmt: skip


def test_environment_order_serve_env_then_usage_stats_wins() -> None:
    store = Store(
        serveArgs=("m",),
        serveEnv=(
            EnvVar("HF_TOKEN", "secret"),
            EnvVar("HF_HUB_VERBOSITY", "debug"),
            EnvVar("VLLM_NO_USAGE_STATS", "0"),
        ),
    )
    launch = plan_launch(store, KEY, SETTINGS, {"PATH": "/bin", "HF_HUB_CACHE": "/x"}).launch
    assert launch is not None
    env = launch.environ
    assert env["PATH"] == "/bin"
    assert env["HF_HUB_CACHE"] == "/d/models"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["HF_HUB_VERBOSITY"] == "debug"  # serveEnv comes after the managed defaults
    assert env["HF_TOKEN"] == "secret"
    assert env["VLLM_NO_USAGE_STATS"] == "1"  # always wins


@pytest.mark.parametrize(
    ("args", "kept", "dropped"),
    [
        (["m", "--host", "1.2.3.4", "--x"], ["m", "--x"], ["--host"]),
        (["m", "--port=9", "--api-key", "k"], ["m"], ["--port", "--api-key"]),
        (["m", "--download-dir", "/tmp", "--dtype", "half"], ["m", "--dtype", "half"],
         ["--download-dir"]),
        (["m", "--api-key"], ["m"], ["--api-key"]),
        (["m", "--hostname", "x"], ["m", "--hostname", "x"], []),
        (["m", "--api_key", "k", "--download_dir=/x"], ["m"], ["--api-key", "--download-dir"]),
    ],
)  # fmt: skip
def test_fixed_flags_are_dropped_in_both_forms(
    args: list[str], kept: list[str], dropped: list[str]
) -> None:
    assert split_fixed_flags(args) == (kept, dropped)


def test_dropped_fixed_flags_are_reported_and_never_reach_argv() -> None:
    plan = plan_launch(Store(serveArgs=("m", "--api-key=mine", "--port", "1")), KEY, SETTINGS, {})
    assert plan.dropped == ("--api-key", "--port")
    assert plan.launch is not None
    assert "mine" not in plan.launch.argv
    assert plan.launch.argv.count("--port") == 1


def test_guard_mode_keeps_the_key_out_of_the_launch() -> None:
    settings = Settings(data=Path("/d"), public=Path("/p"), run_dir=Path("/r"), auth="guard")
    store = Store(serveArgs=("m",))
    one = plan_launch(store, "A" * 22, settings, {"PYTHONPATH": "/x"}, Path("/r/pp")).launch
    two = plan_launch(store, "B" * 22, settings, {"PYTHONPATH": "/x"}, Path("/r/pp")).launch
    assert one == two  # a new key does not restart vLLM
    assert one is not None
    assert "--api-key" not in one.argv
    assert one.argv[-2:] == ("--middleware", "vllmd.guard.ApiKeyGuard")
    assert one.environ["VLLMD_KEY_FILE"] == "/p/credentials.json"
    assert one.environ["PYTHONPATH"] == "/r/pp:/x"


def test_a_new_key_changes_the_launch_in_flag_mode() -> None:
    store = Store(serveArgs=("m",))
    assert plan_launch(store, "A" * 22, SETTINGS, {}) != plan_launch(store, "B" * 22, SETTINGS, {})


def test_the_key_is_not_in_the_launchs_repr() -> None:
    launch = plan_launch(Store(serveArgs=("m",), serveEnv=(EnvVar("T", "s3cr3t"),)), KEY,
                         SETTINGS, {}).launch  # fmt: skip
    assert "s3cr3t" not in repr(launch)


@pytest.mark.parametrize(
    ("args", "model"),
    [
        (["org/m", "--x"], "org/m"),
        (["--model", "o/m"], "o/m"),
        (["--model=o/m"], "o/m"),
        ([], None),
    ],
)
def test_model_of_finds_positional_or_flag(args: list[str], model: str | None) -> None:
    assert model_of(args) == model


def test_logged_argv_hides_secret_flag_values() -> None:
    argv = ["vllm", "serve", "m", "--hf-token", "hf_abc", "--hf_token=hf_def", "--api-key", KEY,
            "--max-model-len", "64"]  # fmt: skip
    shown = shown_argv(argv)
    assert "hf_abc" not in shown and "hf_def" not in shown and KEY not in shown
    assert shown == ("vllm serve m --hf-token *** --hf_token=*** --api-key *** --max-model-len 64")


def test_secrets_of_a_store_are_env_values_and_secret_flag_values() -> None:
    store = Store(
        serveArgs=("m", "--hf-token", "hf_one", "--hf_token=hf_two", "--dtype", "half"),
        serveEnv=(EnvVar("HF_TOKEN", "hf_three"),),
    )
    assert sorted(secrets_of(store)) == ["hf_one", "hf_three", "hf_two"]


def _argv(*serve_args: str, settings: Settings = SETTINGS) -> tuple[str, ...]:
    launch = plan_launch(Store(serveArgs=serve_args), KEY, settings, {}).launch
    assert launch is not None
    return launch.argv


def test_the_drain_timeout_goes_right_after_no_enable_log_requests() -> None:
    # given a drain of 12 s; when the launch is planned; then vLLM drains for 12 s on SIGTERM
    settings = Settings(data=Path("/d"), auth="flag", drain_timeout_s=12)
    argv = _argv("m", settings=settings)
    i = argv.index("--no-enable-log-requests")
    assert argv[i + 1 : i + 3] == ("--shutdown-timeout", "12")
    assert argv.index("--shutdown-timeout") < argv.index("--host")


def test_a_fraction_of_a_second_of_drain_is_rounded_up_to_vllms_whole_seconds() -> None:
    assert _argv("m", settings=Settings(drain_timeout_s=0.2, auth="flag"))[4:6] == (
        "--shutdown-timeout",
        "1",
    )
    assert _argv("m", settings=Settings(drain_timeout_s=0, auth="flag"))[4:6] == (
        "--shutdown-timeout",
        "0",
    )


@pytest.mark.parametrize(
    "given",
    [("--shutdown-timeout", "60"), ("--shutdown-timeout=60",), ("--shutdown_timeout", "60")],
)
def test_serve_args_own_shutdown_timeout_wins_over_the_drain_timeout(
    given: tuple[str, ...],
) -> None:
    # given serveArgs that set vLLM's drain; when planned; then theirs is the only one
    argv = _argv("m", *given)
    assert sum(arg.replace("_", "-").startswith("--shutdown-timeout") for arg in argv) == 1
    launch = Launch(argv, ())
    assert launch.drain_s == 60


def test_the_launch_knows_how_long_vllm_drains() -> None:
    assert Launch(_argv("m", settings=Settings(drain_timeout_s=7, auth="flag")), ()).drain_s == 7
    assert Launch(("vllm", "serve", "m"), ()).drain_s == 0
    assert Launch(("vllm", "serve", "m", "--shutdown-timeout", "soon"), ()).drain_s == 0


def test_the_probes_path_is_kept_out_of_vllms_access_log() -> None:
    argv = _argv("m")
    i = argv.index("--disable-access-log-for-endpoints")
    assert argv[i + 1] == "/health"
    assert i < argv.index("--host")


@pytest.mark.parametrize(
    ("given", "merged"),
    [
        (("--disable-access-log-for-endpoints", "/metrics"), "/health,/metrics"),
        (("--disable-access-log-for-endpoints=/metrics,/health",), "/health,/metrics"),
        (("--disable_access_log_for_endpoints", "/a", "--disable-access-log-for-endpoints",
          "/b, /a"), "/health,/a,/b"),
    ],
)  # fmt: skip
def test_the_users_quiet_paths_are_merged_with_the_probes(
    given: tuple[str, ...], merged: str
) -> None:
    # given serveArgs that keep their own paths out of the log; when planned; then one flag
    # carries ours and theirs, before the fixed flags, and their own flag is gone from its place
    argv = _argv("m", *given, "--dtype", "half")
    names = [a for a in argv if a.replace("_", "-").startswith("--disable-access-log")]
    assert names == ["--disable-access-log-for-endpoints"]
    i = argv.index("--disable-access-log-for-endpoints")
    assert argv[i + 1] == merged
    assert argv[2:5] == ("m", "--dtype", "half")
    assert i < argv.index("--host")


def test_compile_caches_live_on_the_data_volume() -> None:
    launch = plan_launch(Store(serveArgs=("m",)), KEY, SETTINGS, {"HOME": "/root"}).launch
    assert launch is not None
    env = launch.environ
    assert env["VLLM_CACHE_ROOT"] == "/d/cache/vllm"
    assert env["TORCHINDUCTOR_CACHE_DIR"] == "/d/cache/inductor"
    assert env["TRITON_CACHE_DIR"] == "/d/cache/triton"


def test_serve_env_overrides_a_compile_cache_and_the_daemons_own_value_does_not() -> None:
    store = Store(serveArgs=("m",), serveEnv=(EnvVar("TRITON_CACHE_DIR", "/fast/triton"),))
    base = {"VLLM_CACHE_ROOT": "/home/x/.cache/vllm"}
    launch = plan_launch(store, KEY, SETTINGS, base).launch
    assert launch is not None
    assert launch.environ["TRITON_CACHE_DIR"] == "/fast/triton"
    assert launch.environ["VLLM_CACHE_ROOT"] == "/d/cache/vllm"


def test_the_drain_timeout_is_a_flag_and_an_environment_variable() -> None:
    assert Settings().drain_timeout_s == 5
    assert settings_from(None, {"VLLMD_DRAIN_TIMEOUT": "30"}).drain_timeout_s == 30
    with pytest.raises(SettingsError, match="VLLMD_DRAIN_TIMEOUT"):
        settings_from(None, {"VLLMD_DRAIN_TIMEOUT": "-1"})


def test_the_cpu_variant_turns_off_the_compiled_artifact_its_vllm_cannot_load() -> None:
    # given the same store on the cpu variant, on nvidia, and on cpu with the user's own value
    store = Store(serveArgs=("m",))
    mine = Store(serveArgs=("m",), serveEnv=(EnvVar("VLLM_USE_AOT_COMPILE", "1"),))
    cpu = plan_launch(store, KEY, Settings(variant="cpu"), {}).launch
    gpu = plan_launch(store, KEY, Settings(variant="nvidia"), {}).launch
    own = plan_launch(mine, KEY, Settings(variant="cpu"), {}).launch
    assert cpu is not None and gpu is not None and own is not None
    # then only the cpu launch carries the default, and serveEnv wins over it
    assert cpu.environ["VLLM_USE_AOT_COMPILE"] == "0"
    assert "VLLM_USE_AOT_COMPILE" not in gpu.environ
    assert own.environ["VLLM_USE_AOT_COMPILE"] == "1"


# (promise, daemon's own environment, serveEnv, offline, HF_HUB_OFFLINE vLLM sees)
OFFLINE_RULE = [
    ("a fetched model launches without the hub", {}, (), True, "1"),
    ("a model not fetched by vllmd launches as before", {}, (), False, None),
    ("the rule wins over the daemon's own value", {"HF_HUB_OFFLINE": "0"}, (), True, "1"),
    ("serveEnv wins over the rule", {}, (EnvVar("HF_HUB_OFFLINE", "0"),), True, "0"),
    ("the daemon's own value is kept when not fetched", {"HF_HUB_OFFLINE": "1"}, (), False, "1"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("base", "serve_env", "offline", "seen"),
    [row[1:] for row in OFFLINE_RULE],
    ids=[row[0] for row in OFFLINE_RULE],
)
def test_a_fetched_model_launches_offline_before_serve_env(
    base: dict[str, str], serve_env: tuple[EnvVar, ...], offline: bool, seen: str | None
) -> None:
    store = Store(serveArgs=("org/m",), serveEnv=serve_env)
    launch = plan_launch(store, KEY, SETTINGS, base, offline=offline).launch
    assert launch is not None
    assert launch.environ.get("HF_HUB_OFFLINE") == seen


def test_going_offline_or_online_is_no_reason_to_restart_vllm() -> None:
    # given the same store planned with and without the offline rule
    store = Store(serveArgs=("org/m",))
    online = plan_launch(store, KEY, SETTINGS, {}).launch
    offline = plan_launch(store, KEY, SETTINGS, {}, offline=True).launch
    assert online is not None and offline is not None
    # then the launches compare equal (the reconciler restarts nothing), the environments differ,
    # and a fetch from the hub runs with the online one
    assert online == offline
    assert offline.environ["HF_HUB_OFFLINE"] == "1"
    assert "HF_HUB_OFFLINE" not in offline.hub_env
    assert offline.hub_env == online.environ


def test_vllms_engine_deadline_is_the_loading_cap_in_whole_seconds() -> None:
    # given a loading cap of 4 h and one with a fraction; when planned
    store = Store(serveArgs=("m",))
    four_hours = plan_launch(store, KEY, Settings(), {}).launch
    odd = plan_launch(store, KEY, Settings(loading_cap_s=2_100.5), {}).launch
    mine = plan_launch(
        Store(serveArgs=("m",), serveEnv=(EnvVar("VLLM_ENGINE_READY_TIMEOUT_S", "60"),)),
        KEY,
        Settings(),
        {},
    ).launch
    assert four_hours is not None and odd is not None and mine is not None
    # then vLLM's own 600 s default never cuts a long load short (a user's value still wins)
    assert four_hours.environ["VLLM_ENGINE_READY_TIMEOUT_S"] == "14400"
    assert odd.environ["VLLM_ENGINE_READY_TIMEOUT_S"] == "2101"
    assert mine.environ["VLLM_ENGINE_READY_TIMEOUT_S"] == "60"


def test_gpu_jit_caches_live_on_the_data_volume_with_a_4_gib_cuda_cache() -> None:
    launch = plan_launch(Store(serveArgs=("m",)), KEY, SETTINGS, {"HOME": "/root"}).launch
    assert launch is not None
    env = launch.environ
    assert env["CUDA_CACHE_PATH"] == "/d/cache/cuda"
    assert env["CUDA_CACHE_MAXSIZE"] == "4294967296"
    assert env["FLASHINFER_WORKSPACE_BASE"] == "/d/cache/flashinfer"
