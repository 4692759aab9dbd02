"""What vllmd owes the StartOS package (CONTRACT.md §4, "StartOS layer"): the ``--form`` JSON of
set-model and delete-model-cache, ``--env-stdin``, and actions that take typed requests.

The form's shape is held on every recorded machine (detection in-process, as ``vllmd`` would
run there) and through the command on a stated H200 and a stated CPU machine.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
from pathlib import Path
from typing import Any

import pytest
from actions_support import (
    ROOT,
    Vols,
    check_cache_form,
    check_set_model_form,
    load_machine,
    machine_names,
    machine_root,
    nvml_loader,
)

from vllmd.actions.cli import delete_model_cache_request, set_model_request
from vllmd.actions.requests import DeleteModelCache, EnvChange, SetModel, StatedHardware
from vllmd.actions.result import ActionError
from vllmd.actions.set_model_form import Current, form_document
from vllmd.cli import build_parser
from vllmd.hardware.tiers import detect
from vllmd.state.catalog import load_catalog

H200 = ("--tier", "nvidia-hopper", "--memory-gb", "141")
CPU = ("--tier", "cpu", "--memory-gb", "16")
SECRET = "hf_s3cr3t-v4lue=with=equals"


@pytest.fixture
def vols(tmp_path: Path) -> Vols:
    return Vols(tmp_path)


def form_of(vols: Vols, *args: str) -> Any:
    run = vols.action("set-model", "--form", *args)
    assert run.returncode == 0, run.stderr
    return run.json()


# ---- set-model --form ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", machine_names())
def test_form_shape_holds_on_every_recorded_machine(name: str, tmp_path: Path) -> None:
    machine = load_machine(name)
    hardware = detect(
        machine["variant"], root=machine_root(machine, tmp_path), nvml_loader=nvml_loader(machine)
    )

    form = form_document(load_catalog(), hardware, Current(None, "none", "", ()))
    document = json.loads(form.to_json())

    check_set_model_form(document)
    assert document["hardware"]["source"] == "detected"
    assert document["hardware"]["tier"] == machine["expect"]["tier"]
    assert [p["id"] for p in document["presets"]] == list(load_catalog().ids)


def test_form_on_a_stated_h200_offers_every_gpu_preset_with_full_context(vols: Vols) -> None:
    document = form_of(vols, *H200)

    check_set_model_form(document)
    assert document["hardware"] == {
        "tier": "nvidia-hopper",
        "budget_gb": 141,
        "gpus": 1,
        "source": "stated",
        "notes": [],
    }
    assert document["default"] == "qwen36-35b-a3b"
    first = document["presets"][0]
    assert first == {
        "id": "qwen36-35b-a3b",
        "name": "Qwen3.6 35B-A3B",
        "fits": True,
        "reason": "needs 30 GB, the budget is 141 GB; context 262,144 tokens",
        "tensorParallelSize": 1,
        "maxModelLen": 262_144,
        "minMemoryGb": 30,
    }
    cpu_only = {p["id"]: p for p in document["presets"]}["qwen3-0.6b"]
    assert not cpu_only["fits"] and cpu_only["reason"].startswith("no build for nvidia-hopper")
    assert (cpu_only["tensorParallelSize"], cpu_only["maxModelLen"]) == (None, None)


def test_form_reasons_are_the_ones_list_shows(vols: Vols) -> None:
    document = form_of(vols, *H200)
    listing = vols.action("set-model", "--list", *H200, "--text")

    for preset in document["presets"]:
        assert preset["reason"] in listing.stdout


def test_form_prefills_the_current_selection_and_env_names_never_values(vols: Vols) -> None:
    run = vols.action(
        "set-model", "--custom", "org/model --max-model-len 4096", "--env", f"HF_TOKEN={SECRET}"
    )
    assert run.returncode == 0, run.stderr

    document = form_of(vols, *CPU)

    assert document["current"] == {
        "selection": "custom",
        "customArgs": "org/model --max-model-len 4096",
        "envNames": ["HF_TOKEN"],
    }
    assert SECRET not in json.dumps(document)


def test_form_writes_nothing_and_reads_an_unreadable_store_as_no_selection(vols: Vols) -> None:
    assert form_of(vols, *CPU)["current"]["selection"] is None
    assert not vols.store.exists()
    vols.write_store({"serveArgs": "not a list"})
    before = vols.store.read_bytes()

    document = form_of(vols, *CPU)

    check_set_model_form(document)
    assert document["current"]["selection"] is None
    assert vols.store.read_bytes() == before


# ---- delete-model-cache --form ------------------------------------------------------------------


def test_cache_form_lists_models_largest_first_with_the_selected_one_marked(vols: Vols) -> None:
    vols.add_model("org/small", blob_bytes=1_000)
    vols.add_model("org/large", blob_bytes=50_000)
    vols.write_store({"serveArgs": ["org/small", "--max-model-len", "8"]})

    run = vols.action("delete-model-cache", "--form")

    assert run.returncode == 0, run.stderr
    document = run.json()
    check_cache_form(document)
    assert document == {
        "version": 1,
        "models": [
            {"id": "org/large", "bytes": 50_106, "selected": False},  # blobs + refs/main
            {"id": "org/small", "bytes": 1_106, "selected": True},
        ],
        "compileCache": {"bytes": 0},
    }
    assert (vols.models / "models--org--large").is_dir()  # nothing deleted


def test_cache_form_of_an_empty_cache(vols: Vols) -> None:
    run = vols.action("delete-model-cache", "--form")
    assert run.returncode == 0, run.stderr
    assert run.json() == {"version": 1, "models": [], "compileCache": {"bytes": 0}}


def test_cache_form_carries_the_compile_cache_size(vols: Vols) -> None:
    kernels = vols.data / "cache" / "inductor" / "kernel.so"
    kernels.parent.mkdir(parents=True)
    kernels.write_bytes(b"k" * 3_000)
    run = vols.action("delete-model-cache", "--form")
    assert run.returncode == 0, run.stderr
    check_cache_form(run.json())
    assert run.json()["compileCache"] == {"bytes": 3_000}


def test_cache_form_with_a_model_is_refused(vols: Vols) -> None:
    vols.add_model("org/small")
    run = vols.action("delete-model-cache", "--form", "--model", "org/small")
    assert run.returncode == 1 and "--form lists the cache and deletes nothing" in run.stderr
    assert (vols.models / "models--org--small").is_dir()


# ---- set-model --env-stdin ----------------------------------------------------------------------


def test_env_stdin_replaces_serve_env_and_values_stay_off_every_output(vols: Vols) -> None:
    vols.write_store({"serveEnv": [{"name": "OLD", "value": "x"}]})

    run = vols.action(
        "set-model",
        "--preset",
        "qwen3-0.6b",
        *CPU,
        "--env-stdin",
        stdin=f"HF_TOKEN={SECRET}\n\nEMPTY=\nLAST=no newline",
    )

    assert run.returncode == 0, run.stderr
    assert vols.read_store()["serveEnv"] == [
        {"name": "HF_TOKEN", "value": SECRET},  # everything after the first '='
        {"name": "EMPTY", "value": ""},
        {"name": "LAST", "value": "no newline"},
    ]
    assert SECRET not in run.stdout + run.stderr


def test_env_stdin_with_nothing_on_stdin_empties_serve_env(vols: Vols) -> None:
    vols.write_store({"serveEnv": [{"name": "OLD", "value": "x"}]})
    run = vols.action("set-model", "--custom", "org/model", "--env-stdin", stdin="\n")
    assert run.returncode == 0, run.stderr
    assert vols.read_store()["serveEnv"] == []


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("HF_TOKEN=x\nhf_s3cr3tv4lue\n", "--env-stdin line 2 has no '='"),
        (f"HF_TOKEN=x\n{SECRET}\n", "--env-stdin line 2: the text before '=' is not a valid"),
        ("1BAD=x\n", "--env-stdin line 1: the text before '=' is not a valid variable name"),
        ("A=1\nA=2\n", "--env-stdin A: given twice"),
    ],
    ids=["no-equals", "pasted-value-with-equals", "bad-name", "twice"],
)
def test_env_stdin_is_validated_like_env_and_never_echoes_a_value(
    vols: Vols, stdin: str, message: str
) -> None:
    run = vols.action("set-model", "--custom", "org/model", "--env-stdin", stdin=stdin)

    assert run.returncode == 1, run.stdout
    assert message in run.stderr
    assert "s3cr3t" not in run.stderr
    assert not vols.store.exists()


def test_env_stdin_that_is_not_utf8_is_refused_without_echoing_it() -> None:
    args = parse("set-model", "--custom", "org/model", "--env-stdin")

    with pytest.raises(ActionError, match="not UTF-8") as raised:
        set_model_request(args, io.BytesIO(b"HF_TOKEN=\xffsecret\n"))

    assert "secret" not in str(raised.value)


# ---- typed requests -----------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["action", *argv])


def test_set_model_request_is_built_once_from_the_command_line() -> None:
    args = parse("set-model", "--preset", "p", "--tier", "amd", "--memory-gb", "8", "--force")
    stdin = io.BytesIO(b"A=1\n")

    assert set_model_request(args, stdin) == SetModel(
        "preset", "p", EnvChange(), StatedHardware("amd", "8", None), force=True
    )
    assert stdin.tell() == 0  # standard input is read only for --env-stdin
    with_stdin = set_model_request(parse("set-model", "--list", "--env-stdin"), stdin)
    assert with_stdin.env == EnvChange(("A=1",), "--env-stdin")


def test_delete_model_cache_request_is_built_once_from_the_command_line() -> None:
    assert delete_model_cache_request(
        parse("delete-model-cache", "--model", "a/b")
    ) == DeleteModelCache(model="a/b", form=False, force=False)


def test_no_action_module_but_the_command_line_sees_argparse() -> None:
    for module in sorted((ROOT / "vllmd" / "actions").glob("*.py")):
        if module.name == "cli.py":
            continue
        tree = ast.parse(module.read_text())
        imported = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "argparse" not in imported, module.name
        names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        assert "Namespace" not in names, module.name
