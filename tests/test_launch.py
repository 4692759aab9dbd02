"""The desired launch (CONTRACT §2.4): argv and environment, fixed flags never from the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllmd.core.launch import model_of, plan_launch, secrets_of, shown_argv, split_fixed_flags
from vllmd.settings import Settings
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
