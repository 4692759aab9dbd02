"""The actions on hostile input: no secret in any output, no abbreviated fixed flag, no hang.

Issue 11: ``set-model --custom "... --hf-token VALUE"`` printed the token in its result (class 6);
Set Model accepted ``--api-k`` and ``--hos``, which vLLM's parser expands to fixed flags
(class 9); the actions hung on a FIFO ``store.json`` or ``credentials.json`` (class 2).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.actions_support import Vols

TOKEN = "hf_SecretTokenValue1234567890"


@pytest.fixture
def vols(tmp_path: Path) -> Vols:
    return Vols(tmp_path)


@pytest.mark.parametrize(
    "text",
    [
        f"org/model --hf-token {TOKEN}",
        f"org/model --hf-token={TOKEN}",
        f"org/model --hf_token {TOKEN} --max-model-len 4096",
        f"org/model --hf-tok {TOKEN}",
    ],
)
def test_set_model_never_prints_a_secret_value(vols: Vols, text: str) -> None:
    # given/when: custom arguments that carry a token
    run = vols.action("set-model", "--custom", text, "--env", f"HF_TOKEN={TOKEN}")
    # then: it is stored for vLLM, and appears in no output
    assert run.returncode == 0, run.stderr
    assert TOKEN in vols.store.read_text()
    assert TOKEN not in run.stdout and TOKEN not in run.stderr
    assert "***" in run.stdout


@pytest.mark.parametrize(
    "text",
    [f"org/model --hf-token {TOKEN} --seed 1", f"org/model --hf-token={TOKEN} --seed 1"],
)
def test_the_form_hides_a_stored_secret_and_submitting_it_unchanged_keeps_it(
    vols: Vols, text: str
) -> None:
    # given custom arguments with a token, set earlier
    assert vols.action("set-model", "--custom", text).returncode == 0
    # when the form is built: the pre-filled text hides the token
    form = vols.action("set-model", "--form")
    assert form.returncode == 0, form.stderr
    shown = json.loads(form.stdout)["current"]["customArgs"]
    assert TOKEN not in form.stdout and "***" in shown
    # when the pre-filled text comes back unchanged, with another change beside it
    again = vols.action("set-model", "--custom", shown.replace("--seed 1", "--seed 2"))
    # then the stored token is kept (never "***"), and no output shows it
    assert again.returncode == 0, again.stderr
    store = json.loads(vols.store.read_text())
    assert TOKEN in " ".join(store["serveArgs"]) and "--seed" in store["serveArgs"]
    assert "***" not in " ".join(store["serveArgs"]) + store["modelSelection"]["customArgs"]
    assert TOKEN not in again.stdout + again.stderr


def test_a_hidden_secret_with_nothing_stored_to_keep_is_refused(vols: Vols) -> None:
    # given no token stored; when "***" is submitted as one; then refused, nothing written
    run = vols.action("set-model", "--custom", "org/model --hf-token ***")
    assert run.returncode == 1
    assert "--hf-token is ***" in run.stderr and "Type the real value" in run.stderr
    assert not vols.store.exists()


@pytest.mark.parametrize(
    ("arg", "flag"),
    [
        ("--api-k", "--api-key"),
        ("--api_ke=x", "--api-key"),
        ("--hos", "--host"),
        ("--po=9000", "--port"),
        ("--download-d", "--download-dir"),
    ],
)
def test_set_model_refuses_abbreviations_of_fixed_flags(vols: Vols, arg: str, flag: str) -> None:
    # given/when: a fixed flag abbreviated the way vLLM's parser would still expand it
    run = vols.action("set-model", "--custom", f"org/model {arg} value")
    # then: refused, naming the flag it stands for, and nothing written
    assert run.returncode == 1
    assert f"{flag} cannot be set here" in run.stderr
    assert not vols.store.exists()


@pytest.mark.parametrize("name", ["store", "credentials"])
def test_actions_do_not_hang_on_a_fifo(vols: Vols, name: str) -> None:
    # given: a FIFO where an action reads a file
    vols.data.mkdir(parents=True, exist_ok=True)
    vols.public.mkdir(parents=True, exist_ok=True)
    os.mkfifo(vols.store if name == "store" else vols.public / "credentials.json")
    # when: the actions that read it run
    began = time.monotonic()
    key = vols.action("get-api-key")
    model = vols.action("set-model", "--custom", "org/model")
    # then: each answers at once, with a clear error or a result, never a traceback
    assert time.monotonic() - began < 20
    for run in (key, model):
        assert "Traceback" not in run.stderr
    if name == "credentials":
        assert key.returncode == 0  # the FIFO was moved aside and a key written
    else:
        assert model.returncode == 1 and "FIFO" in model.stderr


@pytest.mark.parametrize(
    "serve_args",
    [
        ["--trust-remote-code", "org/m"],
        ["--model=org/m", "--max-model-len", "4096"],
        ["org/other", "--speculative-model", "ORG/M"],
    ],
    ids=["flag-before-model", "model-equals", "draft-model"],
)
def test_delete_model_cache_refuses_any_id_that_serve_args_name(
    vols: Vols, serve_args: list[str]
) -> None:
    # given: a cached model that serveArgs name, wherever it stands in them
    (vols.data / "models" / "models--org--m" / "blobs").mkdir(parents=True)
    vols.write_store({"serveArgs": serve_args})
    # when: it is deleted without --force
    run = vols.action("delete-model-cache", "--model", "org/m")
    # then: refused, and the cache is still there
    assert run.returncode == 1 and "is the selected model" in run.stderr
    assert (vols.data / "models" / "models--org--m").is_dir()
