"""The actions end to end: ``python -m vllmd action …`` on temporary volumes, no daemon running.

Each test checks what a caller sees (stdout JSON, stderr, exit status) and what is left on disk.
Hardware is always stated (``--tier/--memory-gb``), so no test depends on this machine's GPU.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from actions_support import Run, Vols

CPU = ("--tier", "cpu", "--memory-gb", "16")
QWEN_CPU_ARGS = [
    "Qwen/Qwen3-0.6B",
    "--dtype",
    "float32",
    "--kv-cache-memory-bytes",
    "2147483648",
    "--reasoning-parser",
    "qwen3",
    "--enable-auto-tool-choice",
    "--tool-call-parser",
    "hermes",
    "--max-model-len",
    "8192",
]


@pytest.fixture
def vols(tmp_path: Path) -> Vols:
    return Vols(tmp_path)


def refused(run: Run, *fragments: str) -> None:
    """The action failed as a user error: exit 1, nothing on stdout, a message, no traceback."""
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert run.stdout == ""
    assert "Traceback" not in run.stderr
    for fragment in fragments:
        assert fragment in run.stderr, run.stderr


def result_of(run: Run) -> dict[str, Any]:
    assert run.returncode == 0, run.stderr
    payload: dict[str, Any] = run.json()
    assert payload["version"] == "1"
    assert isinstance(payload["title"], str) and payload["title"]
    assert set(payload) == {"version", "title", "message", "result"}
    return payload


def members(value: dict[str, Any]) -> dict[str, dict[str, Any]]:
    assert value["type"] == "group"
    return {m["name"]: m for m in value["value"]}


# ---- get-api-key --------------------------------------------------------------------------------


def test_get_api_key_creates_the_key_and_prints_it_masked_and_copyable(vols: Vols) -> None:
    payload = result_of(vols.action("get-api-key"))
    key = json.loads(vols.credentials.read_text())["apiKey"]
    assert payload["title"] == "API Key"
    assert payload["result"] == {
        "type": "single",
        "value": key,
        "copyable": True,
        "masked": True,
        "qr": False,
    }
    assert len(key) == 22 and key.isalnum()
    assert key not in payload["message"]
    assert stat.S_IMODE(vols.credentials.stat().st_mode) == 0o644


def test_get_api_key_returns_the_same_key_every_time(vols: Vols) -> None:
    first = result_of(vols.action("get-api-key"))["result"]["value"]
    assert result_of(vols.action("get-api-key"))["result"]["value"] == first


def test_get_api_key_moves_an_invalid_key_file_aside_like_the_daemon(vols: Vols) -> None:
    vols.public.mkdir()
    vols.credentials.write_text('{"apiKey": "short"}')
    run = vols.action("get-api-key")
    payload = result_of(run)
    aside = [p for p in vols.public.iterdir() if p.name.startswith("credentials.json.invalid-")]
    assert len(aside) == 1 and aside[0].read_text() == '{"apiKey": "short"}'
    assert aside[0].name in payload["message"]
    assert payload["result"]["value"] == json.loads(vols.credentials.read_text())["apiKey"]
    assert payload["result"]["value"] not in run.stderr


def test_get_api_key_text_form_shows_the_key(vols: Vols) -> None:
    run = vols.action("get-api-key", "--text")
    assert run.returncode == 0
    key = json.loads(vols.credentials.read_text())["apiKey"]
    assert run.stdout.startswith("API Key\n") and key in run.stdout


def test_get_api_key_on_an_unwritable_volume_is_a_clear_error(vols: Vols) -> None:
    vols.public.write_text("not a folder")
    refused(vols.action("get-api-key"), str(vols.public))


# ---- set-model: presets -------------------------------------------------------------------------


def test_preset_writes_serve_args_for_the_tier_with_its_context_step(vols: Vols) -> None:
    payload = result_of(vols.action("set-model", "--preset", "qwen3-0.6b", *CPU))
    store = vols.read_store()
    assert store["serveArgs"] == QWEN_CPU_ARGS
    assert store["modelSelection"] == {"selection": "qwen3-0.6b"}
    assert "serveEnv" not in store  # not given: left as it was (absent)
    found = members(payload["result"])
    assert found["Model"]["value"] == "Qwen/Qwen3-0.6B"
    assert found["Arguments"]["value"].split() == QWEN_CPU_ARGS
    assert "Qwen/Qwen3-0.6B" in payload["message"]


def test_preset_over_several_identical_gpus_adds_tensor_parallelism(vols: Vols) -> None:
    run = vols.action(
        "set-model", "--preset", "llama-33-70b", "--tier", "nvidia-older",
        "--memory-gb", "24", "--gpus", "2",
    )  # fmt: skip
    result_of(run)
    args = vols.read_store()["serveArgs"]
    assert args[0] == "ibnzterrell/Meta-Llama-3.3-70B-Instruct-AWQ-INT4"
    assert args[-4:] == ["--tensor-parallel-size", "2", "--max-model-len", "8192"]


def test_preset_on_a_recorded_h200_gets_the_full_context(vols: Vols) -> None:
    run = vols.action(
        "set-model", "--preset", "qwen3-30b-a3b", "--tier", "nvidia-hopper", "--memory-gb", "141"
    )
    result_of(run)
    assert vols.read_store()["serveArgs"][-2:] == ["--max-model-len", "262144"]


def test_preset_that_does_not_fit_is_refused_with_what_fits(vols: Vols) -> None:
    run = vols.action(
        "set-model", "--preset", "llama-33-70b", "--tier", "nvidia-older", "--memory-gb", "24"
    )
    refused(
        run,
        "'llama-33-70b' does not fit nvidia-older, 1 GPU with 24 GB",
        "needs 44 GB, the budget is 24 GB",
        "Presets that fit: qwen3-30b-a3b, mistral-small-32-24b, gemma4-31b",
    )
    assert not vols.store.exists()


def test_preset_without_a_build_for_the_tier_is_refused(vols: Vols) -> None:
    run = vols.action(
        "set-model", "--preset", "nemotron3-elastic-30b-a3b", "--tier", "nvidia-older",
        "--memory-gb", "80",
    )  # fmt: skip
    refused(run, "no build for nvidia-older")


def test_no_preset_fits_says_to_use_custom(vols: Vols) -> None:
    run = vols.action("set-model", "--preset", "qwen3-0.6b", "--tier", "cpu", "--memory-gb", "2")
    refused(run, "No preset fits; use --custom")


def test_unknown_preset_is_refused_with_the_list(vols: Vols) -> None:
    refused(
        vols.action("set-model", "--preset", "gpt-5", *CPU),
        "--preset 'gpt-5': no such preset",
        "qwen36-35b-a3b",
        "smollm2-135m",
    )


def test_choosing_a_preset_keeps_the_custom_text_and_unknown_keys(vols: Vols) -> None:
    vols.write_store(
        {
            "serveArgs": ["old/model"],
            "modelSelection": {"selection": "custom", "customArgs": "old/model", "customEnv": []},
            "startosNote": {"kept": True},
        }
    )
    result_of(vols.action("set-model", "--preset", "smollm2-135m", *CPU))
    store = vols.read_store()
    assert store["modelSelection"] == {
        "selection": "smollm2-135m",
        "customArgs": "old/model",
        "customEnv": [],
    }
    assert store["startosNote"] == {"kept": True}
    assert store["serveArgs"][0] == "HuggingFaceTB/SmolLM2-135M-Instruct"


# ---- set-model: custom --------------------------------------------------------------------------


def test_custom_arguments_split_like_a_shell_so_json_survives(vols: Vols) -> None:
    text = """org/model --speculative-config '{"method": "mtp", "n": 3}' --x "a b" c\\ d"""
    result_of(vols.action("set-model", "--custom", text))
    store = vols.read_store()
    assert store["serveArgs"] == [
        "org/model",
        "--speculative-config",
        '{"method": "mtp", "n": 3}',
        "--x",
        "a b",
        "c d",
    ]
    assert store["modelSelection"] == {"selection": "custom", "customArgs": text}


def test_custom_arguments_without_quotes_split_on_whitespace(vols: Vols) -> None:
    result_of(vols.action("set-model", "--custom", "  org/model\t--max-model-len   4096\n"))
    assert vols.read_store()["serveArgs"] == ["org/model", "--max-model-len", "4096"]


@pytest.mark.parametrize(
    ("text", "flag", "why"),
    [
        ("org/model --port 9000", "--port", "port StartOS exposes"),
        ("org/model --host=127.0.0.1", "--host", "address vllmd gives it"),
        ("org/model --download-dir /tmp", "--download-dir", "data volume's cache"),
        ("org/model --api-key secret", "--api-key", "comes from credentials.json"),
        ("org/model --api_key=secret", "--api-key", "comes from credentials.json"),
    ],
)
def test_fixed_flags_in_custom_arguments_are_refused_with_why(
    vols: Vols, text: str, flag: str, why: str
) -> None:
    run = vols.action("set-model", "--custom", text)
    refused(run, f"{flag} cannot be set here, vllmd sets it itself", why)
    assert "secret" not in run.stderr
    assert not vols.store.exists()


def test_unterminated_quote_is_refused(vols: Vols) -> None:
    refused(
        vols.action("set-model", "--custom", "org/model --chat-template 'x.jinja"),
        "cannot be split: no closing quotation",
    )


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_custom_arguments_are_refused(vols: Vols, text: str) -> None:
    refused(vols.action("set-model", "--custom", text), "the custom arguments are empty")


def test_custom_arguments_must_start_with_the_model(vols: Vols) -> None:
    refused(
        vols.action("set-model", "--custom", "--max-model-len 4096"),
        "start with '--max-model-len', not a model",
    )
    result_of(vols.action("set-model", "--custom", "--model org/model --max-model-len 4096"))


# ---- set-model: environment ---------------------------------------------------------------------


def test_env_replaces_serve_env_and_its_values_are_never_printed(vols: Vols) -> None:
    vols.write_store({"serveEnv": [{"name": "OLD", "value": "old-secret"}]})
    run = vols.action(
        "set-model", "--custom", "org/model", "--env", "HF_TOKEN=hf_topsecret", "--env", "EMPTY="
    )
    payload = result_of(run)
    assert vols.read_store()["serveEnv"] == [
        {"name": "HF_TOKEN", "value": "hf_topsecret"},
        {"name": "EMPTY", "value": ""},
    ]
    assert members(payload["result"])["Environment"]["value"] == "HF_TOKEN, EMPTY"
    assert "topsecret" not in run.stdout + run.stderr


def test_env_omitted_keeps_serve_env(vols: Vols) -> None:
    vols.write_store({"serveEnv": [{"name": "HF_TOKEN", "value": "hf_kept"}]})
    run = vols.action("set-model", "--preset", "smollm2-135m", *CPU)
    result_of(run)
    assert vols.read_store()["serveEnv"] == [{"name": "HF_TOKEN", "value": "hf_kept"}]
    assert "hf_kept" not in run.stdout + run.stderr


def test_clear_env_empties_serve_env(vols: Vols) -> None:
    vols.write_store({"serveEnv": [{"name": "HF_TOKEN", "value": "x"}]})
    result_of(vols.action("set-model", "--custom", "org/model", "--clear-env"))
    assert vols.read_store()["serveEnv"] == []


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("1ABC=x", "--env number 1: the text before '=' is not a valid variable name"),
        ("A-B=x", "is not a valid variable name"),
        ("=x", "0 characters given"),
        ("hf_pastedtokenwithoutname", "--env number 1 has no '='"),
        ("hf-pastedtoken=with=equals", "not shown in case a value was pasted there"),
    ],
)
def test_bad_env_names_are_refused_without_echoing_them(
    vols: Vols, item: str, message: str
) -> None:
    run = vols.action("set-model", "--custom", "org/model", "--env", item)
    refused(run, message)
    assert "pastedtoken" not in run.stderr and "1ABC" not in run.stderr
    assert not vols.store.exists()


def test_an_env_name_given_twice_is_refused(vols: Vols) -> None:
    run = vols.action("set-model", "--custom", "org/model", "--env", "A=1", "--env", "A=2")
    refused(run, "--env A: given twice")


# ---- set-model: the store file ------------------------------------------------------------------


@pytest.mark.parametrize("content", ["", "{not json", '{"serveArgs": "a string"}', "[]"])
def test_unreadable_store_is_refused_and_left_untouched(vols: Vols, content: str) -> None:
    vols.data.mkdir()
    vols.store.write_text(content)
    run = vols.action("set-model", "--custom", "org/model")
    refused(run, str(vols.store), "Nothing was written", "--force")
    assert vols.store.read_text() == content
    assert sorted(p.name for p in vols.data.iterdir()) == ["store.json"]


def test_force_moves_an_unreadable_store_aside_and_writes_a_new_one(vols: Vols) -> None:
    vols.data.mkdir()
    vols.store.write_text("{not json")
    payload = result_of(vols.action("set-model", "--custom", "org/model", "--force"))
    aside = [p for p in vols.data.iterdir() if p.name.startswith("store.json.invalid-")]
    assert len(aside) == 1 and aside[0].read_text() == "{not json"
    assert aside[0].name in payload["message"]
    assert vols.read_store()["serveArgs"] == ["org/model"]


def test_store_is_written_atomically_with_no_temporary_left(vols: Vols) -> None:
    result_of(vols.action("set-model", "--custom", "org/model"))
    assert sorted(p.name for p in vols.data.iterdir()) == ["store.json"]
    assert stat.S_IMODE(vols.store.stat().st_mode) == 0o644


# ---- set-model: the form ------------------------------------------------------------------------


def test_list_shows_every_preset_the_default_and_the_current_selection(vols: Vols) -> None:
    vols.write_store({"serveArgs": ["x/y"], "modelSelection": {"selection": "qwen3-30b-a3b"}})
    run = vols.action("set-model", "--list", "--tier", "nvidia-older", "--memory-gb", "24")
    payload = result_of(run)
    found = members(payload["result"])
    assert found["Default"]["value"] == "qwen3-30b-a3b"
    assert found["Current selection"]["value"] == "qwen3-30b-a3b"
    assert found["Hardware"]["value"].startswith("nvidia-older, 1 GPU with 24 GB")
    presets = members(found["Presets"])
    assert presets["Qwen3 30B-A3B"]["value"] == "qwen3-30b-a3b"
    assert presets["Qwen3 30B-A3B"]["description"].startswith("fits: needs 22 GB")
    assert presets["Llama 3.3 70B Instruct"]["description"].startswith("does not fit: needs 44")
    assert presets["Gemma 4 26B-A4B Instruct"]["description"].startswith(
        "does not fit: no build for nvidia-older"
    )
    assert presets["Custom"]["value"] == "custom"
    assert len(presets) == 12
    assert vols.read_store() == {
        "serveArgs": ["x/y"],
        "modelSelection": {"selection": "qwen3-30b-a3b"},
    }


def test_list_text_form_on_a_cpu_machine(vols: Vols) -> None:
    run = vols.action("set-model", "--list", "--text", *CPU)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "Hardware: cpu, 16 GB of memory (stated with --tier/--memory-gb)"
    assert "Current selection: none" in lines and "Default: qwen3-0.6b" in lines
    assert any(line.split()[:2] == ["smollm2-135m", "fits"] for line in lines)
    assert any(line.split()[:2] == ["gemma4-31b", "no"] for line in lines)


def test_list_without_any_fit_defaults_to_custom(vols: Vols) -> None:
    run = vols.action("set-model", "--list", "--tier", "amd", "--memory-gb", "8")
    assert members(result_of(run)["result"])["Default"]["value"] == "custom"


def test_list_on_an_unreadable_store_still_shows_the_form(vols: Vols) -> None:
    vols.data.mkdir()
    vols.store.write_text("{")
    payload = result_of(vols.action("set-model", "--list", *CPU))
    assert members(payload["result"])["Current selection"]["value"].startswith("unknown: ")


def test_list_detects_this_machine_when_no_hardware_is_given(vols: Vols) -> None:
    payload = result_of(vols.action("set-model", "--list"))
    assert members(payload["result"])["Hardware"]["value"].startswith("cpu, ")


# ---- set-model: usage ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give exactly one of --preset ID, --custom ARGS, --list or --form"),
        (("--list", "--form"), "give exactly one of"),
        (("--preset", "qwen3-0.6b", "--custom", "org/model"), "give exactly one of"),
        (("--list", "--tier", "cpu"), "--tier and --memory-gb go together"),
        (("--list", "--memory-gb", "8"), "--tier and --memory-gb go together"),
        (("--list", "--tier", "tpu", "--memory-gb", "8"), "--tier 'tpu': not a tier"),
        (("--list", "--tier", "cpu", "--memory-gb", "lots"), "--memory-gb 'lots': expected"),
        (("--list", "--tier", "cpu", "--memory-gb", "-3"), "--memory-gb '-3': expected"),
        (("--list", "--tier", "cpu", "--memory-gb", "nan"), "--memory-gb 'nan': expected"),
        (("--list", "--tier", "amd", "--memory-gb", "8", "--gpus", "0"), "--gpus '0': expected"),
        (("--list", *CPU, "--gpus", "2"), "the cpu tier has no GPUs"),
        (("--custom", "a/b", "--env", "A=1", "--clear-env"), "contradict each other"),
        (("--custom", "a/b", "--env", "A=1", "--env-stdin"), "--env and --env-stdin contradict"),
        (("--custom", "a/b", "--env-stdin", "--clear-env"), "contradict each other"),
    ],
)
def test_bad_option_values_are_user_errors(vols: Vols, args: tuple[str, ...], message: str) -> None:
    refused(vols.action("set-model", *args), message)


# ---- delete-model-cache -------------------------------------------------------------------------


def test_listing_shows_models_with_sizes_counting_links_once(vols: Vols) -> None:
    vols.add_model("Qwen/Qwen3-0.6B", blob_bytes=4096)
    folder = vols.add_model("org/other", blob_bytes=1000)
    os.link(folder / "blobs" / "sha-weights", folder / "blobs" / "hardlink")  # counted once
    vols.write_store({"serveArgs": ["Qwen/Qwen3-0.6B", "--dtype", "float32"]})
    payload = result_of(vols.action("delete-model-cache"))
    found = members(payload["result"])
    assert found["Qwen/Qwen3-0.6B"]["value"] == "4.2 kB"  # 4096 + 100 + the 6-byte ref
    assert found["Qwen/Qwen3-0.6B"]["description"] == "selected: vLLM serves it"
    assert found["org/other"]["value"] == "1.1 kB" and found["org/other"]["description"] is None
    assert payload["message"] == "2 cached models, 5.3 kB in all."


def test_listing_an_empty_or_missing_cache(vols: Vols) -> None:
    payload = result_of(vols.action("delete-model-cache"))
    assert payload["result"] == {"type": "group", "value": []}
    assert payload["message"].startswith("No cached models in ")


def test_delete_removes_the_model_and_says_how_much_was_freed(vols: Vols) -> None:
    vols.add_model("org/model", blob_bytes=10_000)
    keep = vols.add_model("org/keep")
    payload = result_of(vols.action("delete-model-cache", "--model", "org/model"))
    assert payload["message"] == "Deleted org/model from the cache: 10.1 kB freed."
    assert members(payload["result"])["Freed"]["description"] == "10,106 bytes"
    assert sorted(p.name for p in vols.models.iterdir()) == [keep.name]


def test_delete_of_a_model_without_organisation(vols: Vols) -> None:
    vols.add_model("gpt2")
    result_of(vols.action("delete-model-cache", "--model", "gpt2"))
    assert list(vols.models.iterdir()) == []


@pytest.mark.parametrize(
    "model_id",
    ["..", "../outside", "org/../..", "/etc/passwd", "", "a/b/c", "org/na me", "org/-x"],
)
def test_traversal_in_model_id_is_refused(vols: Vols, model_id: str) -> None:
    outside = vols.root / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    vols.add_model("org/model")
    run = vols.action("delete-model-cache", "--model", model_id)
    refused(run, f"--model {model_id!r}: ", "Nothing was deleted")
    assert (outside / "precious").read_text() == "keep me"
    assert (vols.models / "models--org--model").is_dir()


def test_empty_model_id_is_an_error(vols: Vols) -> None:
    refused(vols.action("delete-model-cache", "--model", ""), "the model id is empty")


def test_symlink_escape_is_refused_and_the_target_kept(vols: Vols) -> None:
    outside = vols.root / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    vols.models.mkdir(parents=True)
    (vols.models / "models--evil--model").symlink_to(outside)
    listing = result_of(vols.action("delete-model-cache"))
    assert listing["result"]["value"] == []  # a link is not a cached model: not listed, not sized
    run = vols.action("delete-model-cache", "--model", "evil/model", "--force")
    refused(run, "is a symbolic link", "never deletes through links")
    assert (outside / "precious").read_text() == "keep me"
    assert (vols.models / "models--evil--model").is_symlink()


def test_links_inside_a_model_are_removed_not_followed(vols: Vols) -> None:
    outside = vols.root / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    folder = vols.add_model("org/model")
    (folder / "snapshots" / "abc123" / "escape").symlink_to(outside)
    result_of(vols.action("delete-model-cache", "--model", "org/model"))
    assert not folder.exists()
    assert (outside / "precious").read_text() == "keep me"


@pytest.mark.parametrize(
    "serve_args",
    [["org/model", "--dtype", "float32"], ["--model", "org/model"], ["--model=ORG/Model"]],
)
def test_deleting_the_selected_model_needs_force(vols: Vols, serve_args: list[str]) -> None:
    vols.add_model("org/model")
    vols.write_store({"serveArgs": serve_args})
    refused(
        vols.action("delete-model-cache", "--model", "org/model"),
        "is the selected model",
        "Nothing was deleted",
        "--force",
    )
    assert (vols.models / "models--org--model").is_dir()
    result_of(vols.action("delete-model-cache", "--model", "org/model", "--force"))
    assert not (vols.models / "models--org--model").exists()


def test_delete_with_an_unreadable_store_needs_force(vols: Vols) -> None:
    vols.add_model("org/model")
    vols.store.write_text("{")
    refused(vols.action("delete-model-cache", "--model", "org/model"), "cannot tell which model")
    result_of(vols.action("delete-model-cache", "--model", "org/model", "--force"))


def test_deleting_a_model_that_is_not_cached_is_a_clear_error(vols: Vols) -> None:
    vols.add_model("org/present")
    refused(
        vols.action("delete-model-cache", "--model", "org/absent"),
        "--model 'org/absent': not in the cache",
        "Nothing was deleted",
        "Cached models: org/present",
    )


def _compile_cache(vols: Vols, size: int = 5_000) -> Path:
    kernel = vols.data / "cache" / "vllm" / "torch_compile_cache" / "model.bin"
    kernel.parent.mkdir(parents=True)
    kernel.write_bytes(b"c" * size)
    return kernel.parents[2]


def test_listing_shows_the_compile_cache_as_the_cache_it_is(vols: Vols) -> None:
    # given a model and compiled kernels on the data volume
    vols.add_model("org/model")
    _compile_cache(vols)
    # when the cache is listed
    payload = result_of(vols.action("delete-model-cache"))
    # then the compile cache is there, named as what it is, apart from the models
    found = members(payload["result"])
    assert found["Compile cache"]["value"] == "5.0 kB"
    assert "compile again" in found["Compile cache"]["description"]
    assert payload["message"] == "1 cached model, 4.2 kB in all. The compile cache holds 5.0 kB."


def test_listing_shows_the_compile_cache_when_no_model_is_cached(vols: Vols) -> None:
    _compile_cache(vols)
    payload = result_of(vols.action("delete-model-cache"))
    assert list(members(payload["result"])) == ["Compile cache"]


def test_delete_compile_cache_removes_it_and_keeps_the_models(vols: Vols) -> None:
    vols.add_model("org/model")
    cache = _compile_cache(vols)
    vols.write_store({"serveArgs": ["org/model"]})  # the selected model is no obstacle
    payload = result_of(vols.action("delete-model-cache", "--compile-cache"))
    assert payload["message"].startswith("Deleted the compile cache: 5.0 kB freed.")
    assert not cache.exists()
    assert [p.name for p in vols.data.iterdir() if p.name.startswith(".vllmd")] == []
    assert (vols.models / "models--org--model").is_dir()


def test_delete_compile_cache_when_there_is_none_is_a_clear_error(vols: Vols) -> None:
    refused(vols.action("delete-model-cache", "--compile-cache"), "there is no compile cache")


def test_delete_compile_cache_never_follows_a_link(vols: Vols, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "keep").mkdir(parents=True)
    vols.data.mkdir(parents=True, exist_ok=True)
    (vols.data / "cache").symlink_to(elsewhere)
    refused(vols.action("delete-model-cache", "--compile-cache"), "never deletes through links")
    assert (elsewhere / "keep").is_dir()


def test_delete_compile_cache_with_a_model_is_refused(vols: Vols) -> None:
    vols.add_model("org/model")
    _compile_cache(vols)
    run = vols.action("delete-model-cache", "--compile-cache", "--model", "org/model")
    refused(run, "give one at a time")
    assert (vols.models / "models--org--model").is_dir()


def test_delete_text_form(vols: Vols) -> None:
    vols.add_model("org/model")
    run = vols.action("delete-model-cache", "--text")
    assert run.returncode == 0
    assert run.stdout.splitlines()[:4] == [
        "Model cache",
        "1 cached model, 4.2 kB in all.",
        "",
        "org/model: 4.2 kB",
    ]
