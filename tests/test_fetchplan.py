"""The fetch's pure rules: which repositories and files vLLM 0.32 reads, the events, the rate."""

from __future__ import annotations

import pytest

from vllmd.core.fetchplan import (
    Plan,
    PlanFile,
    Target,
    parse_target,
    select_files,
    target_arg,
    targets,
    weight_index,
)
from vllmd.core.fetchstate import (
    DoneEvent,
    ErrorEvent,
    FetchState,
    PlanEvent,
    ProgressEvent,
    RateWindow,
    advice,
    decode_event,
    encode_event,
)


def _never_local(_: str) -> bool:
    return False


SPEC = '{"model": "org/draft", "num_speculative_tokens": 3}'

TARGETS = [
    (["org/m"], [("org/m", None, "model")]),
    (["gpt2"], [("gpt2", None, "model")]),
    (["--model", "org/m", "--revision", "v2"], [("org/m", "v2", "model")]),
    (["--model=org/m", "--revision=abc"], [("org/m", "abc", "model")]),
    (
        ["org/m", "--tokenizer", "org/tok"],
        [("org/m", None, "model"), ("org/tok", None, "tokenizer")],
    ),
    # the tokenizer at the model's revision unless told otherwise, as vLLM does
    (
        ["org/m", "--revision", "r1", "--tokenizer=org/tok"],
        [("org/m", "r1", "model"), ("org/tok", "r1", "tokenizer")],
    ),
    (
        ["org/m", "--tokenizer-revision", "t1"],
        [("org/m", None, "model"), ("org/m", "t1", "tokenizer")],
    ),
    (["org/m", "--tokenizer", "org/m"], [("org/m", None, "model")]),
    (
        ["org/m", "--speculative-config", SPEC],
        [("org/m", None, "model"), ("org/draft", None, "draft")],
    ),
    (
        ["org/m", f'--speculative_config={SPEC[:-1]}, "revision": "d1"}}'],
        [("org/m", None, "model"), ("org/draft", "d1", "draft")],
    ),
    (["org/m", "--speculative-config", '{"method": "ngram"}'], [("org/m", None, "model")]),
    (["org/m", "--speculative-config", "{not json"], [("org/m", None, "model")]),
    (["org/m", "--speculative-config", '{"model": "org/m"}'], [("org/m", None, "model")]),
    (["/models/m"], []),
    (["./m"], []),
    (["../m"], []),
    (["~/m"], []),
    (["org/m/extra"], []),
    (["https://example.com/m"], []),
    (["org/m:Q4_K_M"], []),
    (["org/../m"], []),
    ([], []),
]


@pytest.mark.parametrize(("args", "expected"), TARGETS)
def test_targets_are_the_hub_repositories_vllm_reads(
    args: list[str], expected: list[tuple[str, str | None, str]]
) -> None:
    assert [(t.repo_id, t.revision, t.role) for t in targets(args, _never_local)] == expected


def test_a_local_folder_is_left_to_vllm() -> None:
    # Given a relative name that is a folder on this machine
    found = targets(["org/m", "--tokenizer", "tok"], lambda name: name == "tok")
    # Then only the hub model is a target
    assert found == (Target("org/m", None, "model"),)


SHARDED = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
SMALL = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "merges.txt",
    "vocab.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "tiktoken.tiktoken",
    "modeling_x.py",
]

SELECT = [
    # safetensors before .bin before .pt; other formats' index files left out
    (
        [*SMALL, "model.safetensors", "pytorch_model.bin", "pytorch_model.bin.index.json"],
        None,
        [*SMALL, "model.safetensors"],
    ),
    (["config.json", "pytorch_model.bin", "x.pt"], None, ["config.json", "pytorch_model.bin"]),
    (["config.json", "weights.pt"], None, ["config.json", "weights.pt"]),
    # the index of the chosen format, and only the shards its weight map names
    (
        ["config.json", *SHARDED, "model.safetensors.index.json", "model.safetensors"],
        frozenset(SHARDED),
        ["config.json", *SHARDED, "model.safetensors.index.json"],
    ),
    # the index not read (yet): every top-level shard
    (
        ["config.json", *SHARDED, "model.safetensors.index.json"],
        None,
        ["config.json", *SHARDED, "model.safetensors.index.json"],
    ),
    # never under original/ or any subfolder: vLLM globs the top level only
    (
        [
            "config.json",
            "model.safetensors",
            "original/consolidated.00.pth",
            "original/params.json",
        ],
        None,
        ["config.json", "model.safetensors"],
    ),
    (
        ["config.json", "onnx/model.safetensors", "pytorch_model.bin"],
        None,
        ["config.json", "pytorch_model.bin"],
    ),
    # Mistral's own format wins when present (load_format auto), with its own index
    (
        [
            "params.json",
            "tekken.json",
            "consolidated.safetensors",
            "consolidated.safetensors.index.json",
            *SHARDED,
            "model.safetensors.index.json",
        ],
        None,
        [
            "params.json",
            "tekken.json",
            "consolidated.safetensors",
            "consolidated.safetensors.index.json",
        ],
    ),
    # files that are neither weights nor what the loaders read
    (
        ["README.md", ".gitattributes", "config.json", "model.safetensors", "img/x.png", "a.onnx"],
        None,
        ["config.json", "model.safetensors"],
    ),
    (["config.json"], None, ["config.json"]),
]


@pytest.mark.parametrize(("paths", "shards", "expected"), SELECT)
def test_select_files_is_what_vllm_reads(
    paths: list[str], shards: frozenset[str] | None, expected: list[str]
) -> None:
    assert list(select_files("model", paths, shards)) == expected
    assert select_files("draft", paths, shards) == select_files("model", paths, shards)


def test_a_tokenizer_target_takes_no_weights() -> None:
    paths = [*SMALL, *SHARDED, "model.safetensors.index.json"]
    assert list(select_files("tokenizer", paths)) == SMALL


def test_the_weight_index_names_its_shards() -> None:
    text = (
        b'{"metadata": {}, "weight_map": '
        b'{"a": "s1.safetensors", "b": "s2.safetensors", "c": "s1.safetensors"}}'
    )
    assert weight_index(text) == {"s1.safetensors", "s2.safetensors"}
    assert weight_index(b'{"weight_map": {}}') is None
    assert weight_index(b"[1]") is None
    assert weight_index(b"not json") is None


def test_a_target_round_trips_through_the_workers_command_line() -> None:
    for target in (Target("org/m", None, "model"), Target("gpt2", "v1.0", "draft")):
        assert parse_target(target_arg(target)) == target
    assert target_arg(Target("org/m", "main", "tokenizer")) == "tokenizer:org/m@main"
    for bad in ("org/m", "weights:org/m", "model:/abs", "model:"):
        with pytest.raises(ValueError):
            parse_target(bad)


def test_a_plans_total_is_the_sum_of_its_files() -> None:
    plan = Plan((PlanFile("o/m", "c" * 40, "a", 3), PlanFile("o/t", "d" * 40, "b", 4)))
    assert plan.total_bytes == 7
    assert Plan(()).total_bytes == 0


EVENTS = [
    (PlanEvent(total=10, present=2, files=3), b'{"event":"plan","total":10,"present":2,"files":3}'),
    (ProgressEvent(done=5, total=10), b'{"event":"progress","done":5,"total":10}'),
    (DoneEvent(total=10), b'{"event":"done","total":10}'),
    (
        ErrorEvent("not-found", "no such model"),
        b'{"event":"error","kind":"not-found","message":"no such model"}',
    ),
    (
        ErrorEvent("disk-full", "full", needed=9, free=1),
        b'{"event":"error","kind":"disk-full","message":"full","needed":9,"free":1}',
    ),
]


@pytest.mark.parametrize(("event", "line"), EVENTS)
def test_an_event_is_one_json_line_both_sides_read_alike(event: object, line: bytes) -> None:
    assert encode_event(event) == line + b"\n"  # type: ignore[arg-type]
    assert decode_event(line) == event


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"Downloading...",
        b"{}",
        b'{"event":"nope"}',
        b'{"event":"error","kind":"bad","message":""}',
    ],
)
def test_a_line_that_is_not_an_event_is_none(line: bytes) -> None:
    assert decode_event(line) is None


def test_the_rate_is_the_growth_over_the_window() -> None:
    # Given samples a second apart, 10 MB/s for 20 s, then nothing moves for 5 s
    window = RateWindow(window_s=10.0)
    assert window.rate_bps == 0.0
    window.sample(0.0, 0)
    assert window.rate_bps == 0.0
    for t in range(1, 21):
        window.sample(float(t), t * 10_000_000)
    # Then the rate is 10 MB/s
    assert window.rate_bps == pytest.approx(10_000_000)
    for t in range(21, 26):
        window.sample(float(t), 200_000_000)
    # And half of the window saw no growth: the rate halves
    assert window.rate_bps == pytest.approx(5_000_000)
    # And a count that goes back (a file replaced) never makes a negative rate
    window.sample(26.0, 0)
    assert window.rate_bps == 0.0


def test_the_eta_is_what_remains_at_the_rate() -> None:
    assert FetchState("o/m", total=100, done=40, rate_bps=20.0).eta_s == 3.0
    assert FetchState("o/m", total=None, done=40, rate_bps=20.0).eta_s is None
    assert FetchState("o/m", total=100, done=40).eta_s is None
    assert FetchState("o/m", total=100, done=120, rate_bps=1.0).eta_s == 0.0


def test_each_failure_kind_gets_the_forensics_advice() -> None:
    assert advice("gated", 401).kind == "hf-gated"  # type: ignore[union-attr]
    assert advice("gated", 403).kind == "hf-forbidden"  # type: ignore[union-attr]
    assert advice("unauthorized").kind == "hf-unauthorized"  # type: ignore[union-attr]
    assert advice("not-found").kind == "model-not-found"  # type: ignore[union-attr]
    assert advice("disk-full").kind == "disk-full"  # type: ignore[union-attr]
    assert advice("network") is None
    assert advice("other") is None
