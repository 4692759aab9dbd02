"""The preset catalog: the reference data, its rules, and clear errors for a broken file."""

# The reference table below keeps one row per line, as the spec has it, so it can be read side by
# side with spec/presets-reference.md.
# ruff: noqa: E501

from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec
import pytest
from actions_support import ROOT

from vllmd.core.choices import TIERS
from vllmd.core.fit import Machine, fit_preset
from vllmd.core.launch import FIXED_FLAGS
from vllmd.core.presets import Catalog, CatalogError, model_id_problem, parse_catalog
from vllmd.state.catalog import catalog_path, load_catalog

CATALOG_FILE = ROOT / "config" / "presets.toml"

# The reference table (spec/presets-reference.md), transcribed with its abbreviations, as an
# independent second copy of the data: each row is tier → (model, args after the model, min GB,
# context steps).
TOOL = "--enable-auto-tool-choice --tool-call-parser {}"
RP = "--reasoning-parser {}"
GMU = "--gpu-memory-utilization 0.9"
L32JINJA = "--chat-template /vllm-workspace/examples/tool_chat_template_llama3.2_json.jinja"
G4 = (
    "--reasoning-parser gemma4 --enable-auto-tool-choice --tool-call-parser gemma4 "
    "--chat-template /vllm-workspace/examples/tool_chat_template_gemma4.jinja "
    '--default-chat-template-kwargs {"enable_thinking":true}'
)
MTP = '--speculative-config {{"method":"mtp","model":"google/{}-assistant","num_speculative_tokens":4}}'
Q3C = f"{RP.format('qwen3')} {TOOL.format('qwen3_coder')}"
GEMMA26_GPU = f"--kv-cache-dtype fp8 {GMU} --max-num-batched-tokens 8192 {G4} {MTP.format('gemma-4-26B-A4B-it')}"
NEMO = "--trust-remote-code --max-num-seqs 8"
MISTRAL = f"--tokenizer-mode mistral {TOOL.format('mistral')}"

Row = tuple[str, str, int, str]
REFERENCE: dict[str, tuple[str, dict[str, Row]]] = {
    "qwen36-35b-a3b": ("Qwen3.6 35B-A3B", {
        "nvidia-blackwell": ("RedHatAI/Qwen3.6-35B-A3B-NVFP4", f"{RP.format('qwen3')} --moe_backend flashinfer_cutlass {TOOL.format('qwen3_coder')}", 32, "32:65536 48:131072 80:262144"),
        "nvidia-hopper": ("cyankiwi/Qwen3.6-35B-A3B-AWQ-4bit", Q3C, 30, "30:262144"),
        "nvidia-older": ("cyankiwi/Qwen3.6-35B-A3B-AWQ-4bit", Q3C, 30, "30:32768 48:65536 80:131072 120:262144"),
        "amd": ("Qwen/Qwen3.6-35B-A3B-FP8", Q3C, 45, "45:32768 80:65536 120:131072 180:262144"),
    }),
    "qwen36-27b": ("Qwen3.6 27B", {
        "nvidia-blackwell": ("sakamakismile/Qwen3.6-27B-Text-NVFP4-MTP", f"--trust-remote-code --quantization modelopt --language-model-only --max-num-seqs 2 --kv-cache-dtype fp8 {GMU} {RP.format('qwen3')} --speculative-config " '{"method":"mtp","num_speculative_tokens":3} ' f"{TOOL.format('qwen3_coder')}", 28, "28:262144"),
        "nvidia-hopper": ("cyankiwi/Qwen3.6-27B-AWQ-INT4", Q3C, 25, "25:262144"),
        "nvidia-older": ("cyankiwi/Qwen3.6-27B-AWQ-INT4", Q3C, 25, "25:32768 40:65536 64:131072 96:262144"),
        "amd": ("Qwen/Qwen3.6-27B-FP8", Q3C, 35, "35:32768 64:65536 96:131072 144:262144"),
    }),
    "qwen3-next-80b-a3b": ("Qwen3-Next 80B-A3B", {
        "nvidia-blackwell": ("RedHatAI/Qwen3-Next-80B-A3B-Instruct-NVFP4", f"--trust-remote-code {GMU} {TOOL.format('hermes')}", 56, "56:32768 80:65536 144:131072 192:262144"),
        "nvidia-hopper": ("cyankiwi/Qwen3-Next-80B-A3B-Instruct-AWQ-4bit", TOOL.format("hermes"), 55, "55:32768 80:65536 144:131072 192:262144"),
        "nvidia-older": ("cyankiwi/Qwen3-Next-80B-A3B-Instruct-AWQ-4bit", TOOL.format("hermes"), 55, "55:32768 96:65536 160:131072"),
        "amd": ("RedHatAI/Qwen3-Next-80B-A3B-Instruct-FP8-dynamic", TOOL.format("hermes"), 95, "95:32768 160:65536 256:131072"),
    }),
    "qwen3-30b-a3b": ("Qwen3 30B-A3B", {
        "nvidia-blackwell": ("RedHatAI/Qwen3-30B-A3B-NVFP4", f"{GMU} {RP.format('qwen3')} {TOOL.format('hermes')}", 25, "25:32768 40:65536 64:131072 96:262144"),
        "nvidia-hopper": ("cyankiwi/Qwen3-30B-A3B-Instruct-2507-AWQ-4bit", TOOL.format("hermes"), 22, "22:32768 40:65536 64:131072 96:262144"),
        "nvidia-older": ("cyankiwi/Qwen3-30B-A3B-Instruct-2507-AWQ-4bit", TOOL.format("hermes"), 22, "22:32768 40:65536 64:131072 96:262144"),
        "amd": ("RedHatAI/Qwen3-30B-A3B-FP8-dynamic", f"{RP.format('qwen3')} {TOOL.format('hermes')}", 38, "38:32768 64:65536 96:131072 144:262144"),
    }),
    "llama-33-70b": ("Llama 3.3 70B Instruct", {
        "nvidia-blackwell": ("RedHatAI/Llama-3.3-70B-Instruct-NVFP4", f"{GMU} {TOOL.format('llama3_json')} {L32JINJA}", 60, "60:32768 80:65536 120:131072"),
        "nvidia-hopper": ("ibnzterrell/Meta-Llama-3.3-70B-Instruct-AWQ-INT4", f"--quantization awq {TOOL.format('llama3_json')} {L32JINJA}", 44, "44:32768 80:65536 144:131072"),
        "nvidia-older": ("ibnzterrell/Meta-Llama-3.3-70B-Instruct-AWQ-INT4", f"--quantization awq {TOOL.format('llama3_json')} {L32JINJA}", 44, "44:8192 64:16384 96:32768 144:65536 192:131072"),
        "amd": ("RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic", f"{TOOL.format('llama3_json')} {L32JINJA}", 85, "85:32768 144:65536 192:131072"),
    }),
    "mistral-small-32-24b": ("Mistral Small 3.2 24B Instruct", {
        "nvidia-blackwell": ("RedHatAI/Mistral-Small-3.2-24B-Instruct-2506-NVFP4", MISTRAL, 22, "22:32768 40:65536 64:131072"),
        "nvidia-hopper": ("jeffcookio/Mistral-Small-3.2-24B-Instruct-2506-awq-sym", MISTRAL, 18, "18:32768 32:65536 64:131072"),
        "nvidia-older": ("jeffcookio/Mistral-Small-3.2-24B-Instruct-2506-awq-sym", MISTRAL, 18, "18:32768 32:65536 64:131072"),
        "amd": ("RedHatAI/Mistral-Small-3.2-24B-Instruct-2506-FP8", MISTRAL, 30, "30:32768 64:65536 96:131072"),
    }),
    "nemotron3-elastic-30b-a3b": ("Nemotron 3 Elastic 30B-A3B", {
        "nvidia-blackwell": ("nvidia/NVIDIA-Nemotron-Labs-3-Elastic-30B-A3B-NVFP4", f"{NEMO} {GMU} --async-scheduling {RP.format('nemotron_v3')} {TOOL.format('qwen3_coder')}", 24, "24:65536 40:131072 80:262144"),
        "nvidia-hopper": ("nvidia/NVIDIA-Nemotron-Labs-3-Elastic-30B-A3B-FP8", f"{NEMO} --kv-cache-dtype fp8 --async-scheduling {RP.format('nemotron_v3')} {TOOL.format('qwen3_coder')}", 40, "40:65536 60:131072 96:262144"),
        "amd": ("nvidia/NVIDIA-Nemotron-Labs-3-Elastic-30B-A3B-FP8", f"{NEMO} {RP.format('nemotron_v3')} {TOOL.format('qwen3_coder')}", 40, "40:32768 80:65536 144:131072"),
    }),
    "gemma4-31b": ("Gemma 4 31B Instruct", {
        "nvidia-blackwell": ("nvidia/Gemma-4-31B-IT-NVFP4", f"--quantization modelopt {GMU} --max-num-batched-tokens 8192 {G4} {MTP.format('gemma-4-31B-it')}", 22, "22:32768 40:65536 64:131072 96:262144"),
        "nvidia-hopper": ("RedHatAI/gemma-4-31B-it-FP8-block", f"--kv-cache-dtype fp8 {GMU} --max-num-batched-tokens 8192 {G4} {MTP.format('gemma-4-31B-it')}", 32, "32:32768 48:65536 80:131072 120:262144"),
        "nvidia-older": ("cyankiwi/gemma-4-31B-it-AWQ-4bit", G4, 24, "24:32768 48:65536 80:131072 128:262144"),
        "amd": ("RedHatAI/gemma-4-31B-it-FP8-dynamic", G4, 40, "40:32768 80:65536 128:131072 192:262144"),
    }),
    "gemma4-26b-a4b": ("Gemma 4 26B-A4B Instruct", {
        "nvidia-blackwell": ("RedHatAI/gemma-4-26B-A4B-it-NVFP4", GEMMA26_GPU, 16, "16:32768 32:65536 64:131072 96:262144"),
        "nvidia-hopper": ("RedHatAI/gemma-4-26B-A4B-it-FP8-Dynamic", GEMMA26_GPU, 28, "28:32768 48:65536 80:131072 120:262144"),
        "amd": ("RedHatAI/gemma-4-26B-A4B-it-FP8-Dynamic", G4, 32, "32:32768 64:65536 96:131072 144:262144"),
    }),
}  # fmt: skip


def split_reference(args: str) -> tuple[str, ...]:
    """The reference's argument text as argv (JSON values contain no spaces)."""
    return tuple(args.split())


def steps(text: str) -> list[tuple[int, int]]:
    return [(int(gb), int(ctx)) for gb, ctx in (pair.split(":") for pair in text.split())]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def test_the_bundled_catalog_loads_from_the_source_checkout() -> None:
    assert catalog_path() == CATALOG_FILE
    assert load_catalog().ids[0] == "qwen36-35b-a3b"


def test_an_installed_wheel_finds_the_catalog_inside_the_package(tmp_path: Path) -> None:
    (tmp_path / "_config").mkdir()
    (tmp_path / "_config" / "presets.toml").write_bytes(CATALOG_FILE.read_bytes())
    assert catalog_path(package=tmp_path) == tmp_path / "_config" / "presets.toml"
    assert catalog_path(package=tmp_path / "elsewhere") == CATALOG_FILE


def test_the_wheel_carries_the_catalog_where_the_loader_looks() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    force = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert force["config/presets.toml"] == "vllmd/_config/presets.toml"


def test_the_catalog_holds_the_nine_spec_presets_then_the_cpu_ones(catalog: Catalog) -> None:
    assert catalog.ids == (*REFERENCE, "qwen3-0.6b", "smollm2-135m")


@pytest.mark.parametrize("preset_id", list(REFERENCE))
def test_reference_data_round_trips(catalog: Catalog, preset_id: str) -> None:
    name, rows = REFERENCE[preset_id]
    preset = catalog.get(preset_id)
    assert preset is not None and preset.name == name
    assert [tier for tier, _ in preset.tiers.items()] == list(rows)
    for tier, (model, args, min_gb, context) in rows.items():
        build = preset.tiers.get(tier)
        assert build is not None
        assert (build.model, build.args, build.min_memory_gb) == (
            model,
            split_reference(args),
            min_gb,
        ), f"{preset_id} on {tier}"
        assert [(s.memory_gb, s.max_model_len) for s in build.context] == steps(context)


def test_the_catalog_survives_an_encode_decode_round_trip(catalog: Catalog) -> None:
    again = msgspec.convert(msgspec.to_builtins(catalog), Catalog)
    assert again == catalog


def test_every_preset_has_a_valid_entry_for_every_tier_it_claims(catalog: Catalog) -> None:
    for preset in catalog.preset:
        for tier, build in preset.tiers.items():
            assert tier in TIERS
            assert model_id_problem(build.model) is None
            fit = fit_preset(preset, Machine(tier, build.min_memory_gb))
            argv = fit.serve_args()
            assert argv[0] == build.model
            assert argv[-2:] == ("--max-model-len", str(build.context[0].max_model_len))
            names = {a.split("=")[0].replace("_", "-") for a in argv}
            assert not names & set(FIXED_FLAGS), f"{preset.id}/{tier} carries a fixed flag"


def test_cpu_presets_run_in_float32_with_a_kv_cache_budget(catalog: Catalog) -> None:
    for preset_id, model in (
        ("qwen3-0.6b", "Qwen/Qwen3-0.6B"),
        ("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct"),
    ):
        preset = catalog.get(preset_id)
        assert preset is not None
        assert [tier for tier, _ in preset.tiers.items()] == ["cpu"]
        build = preset.tiers.get("cpu")
        assert build is not None and build.model == model and build.min_memory_gb <= 8
        args = list(build.args)
        assert args[args.index("--dtype") + 1] == "float32"
        assert int(args[args.index("--kv-cache-memory-bytes") + 1]) > 0


def test_the_catalog_says_the_cpu_tier_is_not_upstream() -> None:
    assert "The cpu tier is NOT in the upstream table" in CATALOG_FILE.read_text()


# ---- a broken catalog is a clear error ----------------------------------------------------------

GOOD = """
[[preset]]
id = "alpha"
name = "Alpha"

[preset.tiers.cpu]
model = "org/alpha"
args = ["--dtype", "float32"]
min_memory_gb = 4
context = [{ memory_gb = 4, max_model_len = 4096 }, { memory_gb = 8, max_model_len = 8192 }]

[[preset]]
id = "beta"
name = "Beta"

[preset.tiers.amd]
model = "org/beta"
args = []
min_memory_gb = 10
context = [{ memory_gb = 10, max_model_len = 4096 }]
"""


def broken(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


def test_the_small_good_catalog_parses() -> None:
    assert parse_catalog(GOOD.encode()).ids == ("alpha", "beta")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (broken('min_memory_gb = 10', 'min_memory_gb = "10"'),
         "presets.toml: preset 'beta', field tiers.amd.min_memory_gb: Expected `int`, got `str`"),
        (broken("[preset.tiers.amd]", "[preset.tiers.amd-gpu]"),
         "preset 'beta', field tiers: Object contains unknown field `amd-gpu`"),
        (broken('name = "Alpha"', 'name = "Alpha"\ncolour = "red"'),
         "preset 'alpha': Object contains unknown field `colour`"),
        (broken("max_model_len = 8192 }", "max_model_len = 8192, note = 1 }"),
         "preset 'alpha', field tiers.cpu.context[1]: Object contains unknown field `note`"),
        (broken("min_memory_gb = 4", "min_memory_gb = 0"),
         "preset 'alpha', field tiers.cpu.min_memory_gb: Expected `int` >= 1"),
        (broken('id = "beta"\n', ""), "preset number 2: Object missing required field `id`"),
        (broken('"--dtype", "float32"', '"--port", "1"'),
         "preset 'alpha', field tiers.cpu.args: --port is set by vllmd itself"),
        (broken('"--dtype", "float32"', '"--api_key=x"'),
         "preset 'alpha', field tiers.cpu.args: --api-key is set by vllmd itself"),
        (broken('"--dtype", "float32"', '"--max-model-len", "9"'),
         "preset 'alpha', field tiers.cpu.args: --max-model-len is added by vllmd"),
        (broken('"--dtype", "float32"', '"--tensor-parallel-size", "2"'),
         "preset 'alpha', field tiers.cpu.args: --tensor-parallel-size is added by vllmd"),
        (broken("{ memory_gb = 4, max_model_len = 4096 }, ", ""),
         "preset 'alpha', field tiers.cpu.context[0].memory_gb: is 8, must equal min_memory_gb"),
        (broken("memory_gb = 8, max_model_len = 8192", "memory_gb = 4, max_model_len = 8192"),
         "preset 'alpha', field tiers.cpu.context[1].memory_gb: steps must grow"),
        (broken("memory_gb = 8, max_model_len = 8192", "memory_gb = 8, max_model_len = 2048"),
         "preset 'alpha', field tiers.cpu.context[1].max_model_len: more memory must not mean"),
        (broken("context = [{ memory_gb = 10, max_model_len = 4096 }]", "context = []"),
         "preset 'beta', field tiers.amd.context: needs at least one step"),
        (broken('model = "org/beta"', 'model = "../beta"'),
         "preset 'beta', field tiers.amd.model: '../beta': a HuggingFace model id is"),
        (broken('id = "beta"', 'id = "alpha"'), "preset 'alpha', field id: appears twice"),
        (broken('id = "beta"', 'id = "custom"'), "preset number 2, field id: 'custom' is not"),
        (broken('id = "beta"', 'id = "Beta Preset"'), "preset number 2, field id: 'Beta Preset'"),
        (broken('name = "Beta"', 'name = " "'), "preset 'beta', field name: is empty"),
        (GOOD.split("[preset.tiers.amd]")[0] + "[preset.tiers]\n",
         "preset 'beta', field tiers: has no build for any tier"),
        ('preset = "x"', "Expected `array`, got `str` - at `$.preset`"),
        ("", "Object missing required field `preset`"),
        ("[[preset]]\nid = 'a", "presets.toml: not valid TOML"),
    ],
)  # fmt: skip
def test_a_broken_catalog_names_the_preset_and_field(text: str, message: str) -> None:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text.encode())
    assert message in str(caught.value)


def test_a_missing_catalog_file_says_to_reinstall(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"cannot read the preset catalog.*reinstall"):
        load_catalog(tmp_path / "presets.toml")


@pytest.mark.parametrize(
    "model_id",
    ["Qwen/Qwen3-0.6B", "gpt2", "HuggingFaceTB/SmolLM2-135M-Instruct", "a_b/c.d-e", "x" * 96],
)
def test_valid_huggingface_ids_are_accepted(model_id: str) -> None:
    assert model_id_problem(model_id) is None


@pytest.mark.parametrize(
    "model_id",
    ["", "..", "../x", "org/../..", "/etc/passwd", "org/", "/name", "a/b/c", "org--x/name",
     "org/na..me", "-org/name", "org/name-", ".hidden", "org/name.git", "org/na me", "x" * 97,
     "org\\name", "ôrg/name"],
)  # fmt: skip
def test_invalid_huggingface_ids_are_refused(model_id: str) -> None:
    assert model_id_problem(model_id) is not None
