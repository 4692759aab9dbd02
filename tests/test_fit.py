"""Fitting presets to machines: boundaries, tensor parallelism, missing builds, the default."""

from __future__ import annotations

import pytest

from vllmd.core.fit import (
    Machine,
    context_length,
    default_fit,
    fit_catalog,
    fit_preset,
    tensor_parallel_size,
)
from vllmd.core.presets import Build, Catalog, ContextStep, Preset, Tiers
from vllmd.state.catalog import load_catalog

CATALOG = load_catalog()


def preset(preset_id: str) -> Preset:
    found = CATALOG.get(preset_id)
    assert found is not None
    return found


def small_catalog() -> Catalog:
    """Two presets: ``big`` (older: 40 GB) and ``small`` (older: 10 GB, hopper: 12 GB)."""

    def build(model: str, gb: int, steps: tuple[tuple[int, int], ...]) -> Build:
        context = tuple(ContextStep(memory_gb=g, max_model_len=n) for g, n in steps)
        return Build(model=model, args=("--x", "1"), min_memory_gb=gb, context=context)

    big = Preset(
        id="big", name="Big", tiers=Tiers(nvidia_older=build("o/big", 40, ((40, 4096), (80, 8192))))
    )
    small = Preset(
        id="small",
        name="Small",
        tiers=Tiers(
            nvidia_older=build("o/small", 10, ((10, 2048),)),
            nvidia_hopper=build("o/small-h", 12, ((12, 2048),)),
        ),
    )
    return Catalog(preset=(big, small))


# ---- boundaries ---------------------------------------------------------------------------------


def test_exactly_the_minimum_memory_fits() -> None:
    fit = fit_preset(preset("llama-33-70b"), Machine("nvidia-hopper", 44))
    assert fit.fits and fit.max_model_len == 32768 and fit.tensor_parallel_size == 1


def test_just_below_the_minimum_does_not_fit_and_says_why() -> None:
    fit = fit_preset(preset("llama-33-70b"), Machine("nvidia-hopper", 43.9))
    assert not fit.fits
    assert fit.reason == "needs 44 GB, the budget is 43.9 GB"
    assert fit.status == "does not fit"


@pytest.mark.parametrize(
    ("budget", "length"),
    [(44, 8192), (63.9, 8192), (64, 16384), (95, 16384), (96, 32768), (143, 32768), (144, 65536),
     (191, 65536), (192, 131072), (1000, 131072)],
)  # fmt: skip
def test_context_length_is_the_largest_step_within_the_budget(budget: float, length: int) -> None:
    build = preset("llama-33-70b").tiers.get("nvidia-older")
    assert build is not None
    assert context_length(build, budget) == length
    assert (
        fit_preset(preset("llama-33-70b"), Machine("nvidia-older", budget)).max_model_len == length
    )


def test_no_context_step_below_the_first() -> None:
    build = preset("llama-33-70b").tiers.get("nvidia-older")
    assert build is not None and context_length(build, 43) is None


# ---- tensor parallelism -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("needed", "per_gpu", "gpus", "size"),
    [
        (44, 48, 1, 1),
        (44, 24, 2, 2),
        (44, 24, 8, 2),  # the fewest cards that fit
        (55, 16, 4, 4),
        (55, 16, 3, None),  # 3 cards: only 2 can be used, and 32 GB is too little
        (56, 8, 8, 8),
        (56, 8, 7, None),
        (95, 12, 8, 8),
        (100, 12, 8, None),
    ],
)
def test_tensor_parallel_size_is_the_fewest_power_of_two_cards(
    needed: float, per_gpu: float, gpus: int, size: int | None
) -> None:
    assert tensor_parallel_size(needed, per_gpu, gpus) == size


def test_preset_too_big_for_one_card_fits_over_two() -> None:
    fit = fit_preset(preset("llama-33-70b"), Machine("nvidia-older", 24, devices=2))
    assert fit.fits and fit.tensor_parallel_size == 2 and fit.status == "fits over 2 GPUs"
    assert fit.max_model_len == 8192  # the budget over 2 cards is 48 GB
    assert fit.serve_args()[-4:] == ("--tensor-parallel-size", "2", "--max-model-len", "8192")
    assert "2 GPUs together have 48 GB" in fit.reason


def test_context_step_follows_the_budget_over_all_cards_used() -> None:
    fit = fit_preset(preset("qwen3-next-80b-a3b"), Machine("nvidia-hopper", 24, devices=8))
    assert fit.tensor_parallel_size == 4 and fit.max_model_len == 65536  # 4 x 24 = 96 GB


def test_preset_that_fits_one_card_uses_one_even_with_more() -> None:
    fit = fit_preset(preset("qwen3-30b-a3b"), Machine("nvidia-hopper", 80, devices=8))
    assert fit.tensor_parallel_size == 1
    assert "--tensor-parallel-size" not in fit.serve_args()


def test_preset_too_big_even_over_every_card_says_how_much_there_is() -> None:
    fit = fit_preset(preset("qwen3-next-80b-a3b"), Machine("nvidia-older", 12, devices=4))
    assert not fit.fits
    assert fit.reason == "needs 55 GB, the budget is 12 GB per GPU and 48 GB over 4 GPUs"


# ---- builds and the default ---------------------------------------------------------------------


def test_no_build_for_the_tier_is_the_reason() -> None:
    fit = fit_preset(preset("nemotron3-elastic-30b-a3b"), Machine("nvidia-older", 80))
    assert not fit.fits and fit.build is None
    assert fit.reason == "no build for nvidia-older (there are builds for nvidia-blackwell, " \
        "nvidia-hopper, amd)"  # fmt: skip


def test_gpu_presets_have_no_cpu_build_and_cpu_presets_no_gpu_build() -> None:
    on_cpu = fit_catalog(CATALOG, Machine("cpu", 64))
    assert [f.preset.id for f in on_cpu if f.fits] == ["qwen3-0.6b", "smollm2-135m"]
    on_gpu = fit_catalog(CATALOG, Machine("nvidia-hopper", 1000))
    assert {f.preset.id for f in on_gpu if not f.fits} == {"qwen3-0.6b", "smollm2-135m"}


def test_default_is_the_first_preset_that_fits() -> None:
    catalog = small_catalog()
    assert default_fit(fit_catalog(catalog, Machine("nvidia-older", 40))).preset.id == "big"  # type: ignore[union-attr]
    assert default_fit(fit_catalog(catalog, Machine("nvidia-older", 39))).preset.id == "small"  # type: ignore[union-attr]
    assert default_fit(fit_catalog(catalog, Machine("nvidia-older", 9))) is None
    assert default_fit(fit_catalog(catalog, Machine("amd", 500))) is None


def test_default_on_an_h200_is_the_first_catalog_preset() -> None:
    chosen = default_fit(fit_catalog(CATALOG, Machine("nvidia-hopper", 140)))
    assert chosen is not None and chosen.preset.id == "qwen36-35b-a3b"


def test_default_on_a_small_cpu_machine_is_the_smallest_model() -> None:
    chosen = default_fit(fit_catalog(CATALOG, Machine("cpu", 6)))
    assert chosen is not None and chosen.preset.id == "smollm2-135m"


def test_serve_args_are_model_then_arguments_then_context() -> None:
    fit = fit_preset(preset("qwen3-30b-a3b"), Machine("nvidia-hopper", 40))
    assert fit.serve_args() == (
        "cyankiwi/Qwen3-30B-A3B-Instruct-2507-AWQ-4bit",
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
        "--max-model-len",
        "65536",
    )


def test_serve_args_of_a_preset_that_does_not_fit_is_an_error() -> None:
    fit = fit_preset(preset("qwen3-30b-a3b"), Machine("nvidia-hopper", 8))
    with pytest.raises(ValueError, match="does not fit"):
        fit.serve_args()


@pytest.mark.parametrize(
    ("tier", "memory", "devices"), [("nvidia-kepler", 10, 1), ("cpu", -1, 1), ("amd", 10, 0)]
)
def test_impossible_machines_are_refused(tier: str, memory: float, devices: int) -> None:
    with pytest.raises(ValueError):
        Machine(tier, memory, devices)


def test_machine_describes_itself_for_people() -> None:
    assert Machine("cpu", 23).describe() == "cpu, 23 GB of memory"
    assert Machine("nvidia-hopper", 140).describe() == "nvidia-hopper, 1 GPU with 140 GB"
    assert Machine("amd", 192, 2).describe() == "amd, 2 identical GPUs with 192 GB each"
