"""Hardware detection on recorded machines: tiers, budgets, fallbacks; it never raises."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from actions_support import (
    ROOT,
    FakeNvml,
    load_machine,
    machine_names,
    machine_root,
    nvml_loader,
    run_vllmd,
    vllmd_env,
)

from vllmd.core.fit import Machine
from vllmd.hardware.linker import Refresh, refresh_linker_cache
from vllmd.hardware.tiers import (
    GIB,
    Gpu,
    Hardware,
    detect,
    nvidia_tier,
    probe_amd,
    summarize,
    system_memory,
    weakest,
    whole_gib,
)


def detect_recorded(name: str, tmp_path: Path) -> tuple[Hardware, dict[str, Any]]:
    machine = load_machine(name)
    root = machine_root(machine, tmp_path / "root")
    return detect(machine["variant"], root=root, nvml_loader=nvml_loader(machine)), machine


# ---- pure rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capability", "tier"),
    [
        ((12, 0), "nvidia-blackwell"),  # RTX 50
        ((12, 1), "nvidia-blackwell"),  # GB10
        ((10, 0), "nvidia-blackwell"),  # B200
        ((11, 0), "nvidia-blackwell"),  # Jetson Thor
        ((9, 0), "nvidia-hopper"),
        ((8, 9), "nvidia-older"),
        ((8, 6), "nvidia-older"),
        ((8, 0), "nvidia-older"),
        ((7, 5), None),
        ((6, 1), None),
    ],
)
def test_tier_follows_compute_capability(capability: tuple[int, int], tier: str | None) -> None:
    assert nvidia_tier(*capability) == tier


def test_mixed_cards_take_the_weakest_tier() -> None:
    assert weakest(["nvidia-blackwell", "nvidia-older", "nvidia-hopper"]) == "nvidia-older"
    assert weakest(["nvidia-blackwell", "nvidia-hopper"]) == "nvidia-hopper"


def test_memory_is_counted_in_whole_gib_rounded_to_nearest() -> None:
    assert whole_gib(81_559 << 20) == 80  # H100 80GB reports 79.6 GiB
    assert whole_gib(143_771 << 20) == 140  # H200
    assert whole_gib(24_564 << 20) == 24  # RTX 4090 reports 23.99 GiB


def test_unified_memory_gpu_budget_is_system_memory() -> None:
    gb10 = Gpu("NVIDIA GB10", "nvidia", "12.1", None, None)
    tier, budget, identical, notes = summarize([gb10], ["nvidia-blackwell"], 100 * GIB)
    assert (tier, budget, identical) == ("nvidia-blackwell", 100, 1)
    assert "unified memory" in notes[0]


def test_identical_cards_allow_tensor_parallelism_and_different_ones_do_not() -> None:
    a = Gpu("NVIDIA GeForce RTX 4090", "nvidia", "8.9", 24 * GIB, 23 * GIB)
    b = Gpu("NVIDIA GeForce RTX 3090", "nvidia", "8.6", 24 * GIB, 23 * GIB)
    assert summarize([a, a, a], ["nvidia-older"] * 3, None)[2] == 3
    _, budget, identical, notes = summarize([a, b], ["nvidia-older"] * 2, None)
    assert (budget, identical) == (24, 1)
    assert "differ" in notes[0]


# ---- recorded machines --------------------------------------------------------------------------


@pytest.mark.parametrize("name", machine_names())
def test_recorded_machine_is_detected_as_recorded(name: str, tmp_path: Path) -> None:
    found, machine = detect_recorded(name, tmp_path)
    expect = machine["expect"]
    assert found.tier == expect["tier"]
    assert found.budget_gb == expect["budget_gb"]
    assert found.identical_gpus == expect["identical_gpus"]
    assert len(found.gpus) == expect["gpus"]
    if "reason" in expect:
        assert found.reason is not None and expect["reason"] in found.reason
    else:
        assert found.reason is None
    assert found.variant == machine["variant"]
    assert found.machine() == Machine(found.tier, found.budget_gb, found.identical_gpus)


def test_h200_is_hopper_with_about_141_gb(tmp_path: Path) -> None:
    found, _ = detect_recorded("h200-141gb", tmp_path)
    assert found.tier == "nvidia-hopper"
    assert 139 <= found.budget_gb <= 141
    (gpu,) = found.gpus
    assert gpu.name == "NVIDIA H200"
    assert gpu.compute_capability == "9.0"
    assert gpu.memory_total_bytes == 143_771 << 20
    assert gpu.memory_free_bytes is not None and gpu.memory_free_bytes <= gpu.memory_total_bytes


def test_gb10_reports_unified_memory_without_a_vram_figure(tmp_path: Path) -> None:
    found, _ = detect_recorded("gb10", tmp_path)
    (gpu,) = found.gpus
    assert gpu.memory_total_bytes is None and gpu.memory_free_bytes is None
    assert found.system_memory_bytes == 127_600_748 * 1024
    assert any("unified memory" in note for note in found.notes)


def test_mi300x_cards_come_from_sysfs_and_other_cards_are_ignored(tmp_path: Path) -> None:
    found, _ = detect_recorded("mi300x-x2", tmp_path)
    assert [gpu.name for gpu in found.gpus] == ["AMD Instinct MI300X"] * 2  # not ASPEED, no DP-1
    assert all(gpu.vendor == "amd" and gpu.compute_capability is None for gpu in found.gpus)
    assert found.gpus[0].memory_free_bytes == 192 * GIB - (300 << 20)


def test_integrated_amd_gpu_is_skipped_with_a_note(tmp_path: Path) -> None:
    found, _ = detect_recorded("amd-apu-only", tmp_path)
    assert found.tier == "cpu"
    assert any("integrated" in note and "512 MiB" in note for note in found.notes)


def test_nvml_raising_at_init_falls_back_to_cpu_and_logs_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="vllmd.hardware.tiers"):
        found, _ = detect_recorded("nvml-driver-not-loaded", tmp_path)
    assert found.tier == "cpu" and found.reason == "NVML failed: Driver Not Loaded"
    assert "Driver Not Loaded" in caplog.text


def test_nvml_is_shut_down_after_probing(tmp_path: Path) -> None:
    machine = load_machine("h100-80gb")
    fake = FakeNvml(machine["nvml"])
    detect("nvidia", root=machine_root(machine, tmp_path), nvml_loader=lambda: fake)
    assert fake.shutdowns == 1


def test_nvml_error_other_than_not_supported_falls_back(tmp_path: Path) -> None:
    machine = load_machine("h100-80gb")
    machine["nvml"]["devices"][0]["memory"] = {"error": 15}  # GPU is lost
    found = detect("nvidia", root=machine_root(machine, tmp_path), nvml_loader=nvml_loader(machine))
    assert found.tier == "cpu" and found.reason is not None and "NVML failed" in found.reason


def test_detection_never_raises_even_on_a_broken_nvml(tmp_path: Path) -> None:
    class Broken:
        def nvmlInit(self) -> None:
            raise RuntimeError("segfault-ish")

    found = detect("nvidia", root=tmp_path, nvml_loader=lambda: Broken())  # type: ignore[arg-type,return-value]
    assert found.tier == "cpu" and found.reason is not None

    def loader() -> Any:
        raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    assert detect("nvidia", root=tmp_path, nvml_loader=loader).tier == "cpu"


def test_cpu_variant_never_loads_nvml(tmp_path: Path) -> None:
    def loader() -> Any:
        raise AssertionError("the cpu variant loaded NVML")

    machine = load_machine("h100-80gb")
    found = detect("cpu", root=machine_root(machine, tmp_path), nvml_loader=loader)
    assert found.tier == "cpu" and found.gpus == () and found.reason is None


def test_rocm_variant_does_not_load_nvml(tmp_path: Path) -> None:
    def loader() -> Any:
        raise AssertionError("the rocm variant loaded NVML")

    machine = load_machine("mi300x-x2")
    assert detect("rocm", root=machine_root(machine, tmp_path), nvml_loader=loader).tier == "amd"


def test_sysfs_absent_falls_back_to_cpu(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "meminfo").write_text("MemTotal: 16777216 kB\n")
    found = detect("rocm", root=tmp_path)
    assert found.tier == "cpu" and found.budget_gb == 16
    assert found.reason is not None and "no AMD GPU" in found.reason
    assert any("/sys/class/drm" in note for note in found.notes)
    assert probe_amd(tmp_path / "nowhere") == ((), ["no /sys/class/drm to look for AMD GPUs in"])


def test_cgroup_limit_lower_than_ram_bounds_the_budget(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "meminfo").write_text(f"MemTotal: {64 * 1024 * 1024} kB\n")
    (tmp_path / "sys/fs/cgroup").mkdir(parents=True)
    (tmp_path / "sys/fs/cgroup/memory.max").write_text(f"{8 * GIB}\n")
    memory, notes = system_memory(tmp_path)
    assert memory == 8 * GIB
    assert "cgroup memory limit (8 GB) is lower" in notes[0]
    found = detect("cpu", root=tmp_path)
    assert found.budget_gb == 8


def test_cgroup_limit_of_the_own_nested_group_counts(tmp_path: Path) -> None:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/meminfo").write_text(f"MemTotal: {64 * 1024 * 1024} kB\n")
    (tmp_path / "proc/self/cgroup").write_text("0::/machine.slice/libpod-abc.scope\n")
    nested = tmp_path / "sys/fs/cgroup/machine.slice/libpod-abc.scope"
    nested.mkdir(parents=True)
    (nested / "memory.max").write_text("max\n")
    (nested.parent / "memory.max").write_text(f"{12 * GIB}\n")
    assert system_memory(tmp_path)[0] == 12 * GIB


def test_cgroup_v1_limit_counts_and_its_unlimited_value_does_not(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text(f"MemTotal: {32 * 1024 * 1024} kB\n")
    v1 = tmp_path / "sys/fs/cgroup/memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert system_memory(tmp_path) == (32 * GIB, [])
    (v1 / "memory.limit_in_bytes").write_text(f"{4 * GIB}\n")
    assert system_memory(tmp_path)[0] == 4 * GIB


def test_unreadable_meminfo_gives_a_zero_budget_not_an_error(tmp_path: Path) -> None:
    found = detect("cpu", root=tmp_path)
    assert found.tier == "cpu" and found.budget_gb == 0 and found.system_memory_bytes is None
    assert any("MemTotal" in note for note in found.notes)


def test_given_hardware_is_checked_like_a_machine() -> None:
    assert Hardware.given("nvidia-hopper", 141, 2).machine() == Machine("nvidia-hopper", 141, 2)
    with pytest.raises(ValueError, match="unknown tier"):
        Hardware.given("nvidia-kepler", 12)


# ---- the command --------------------------------------------------------------------------------


def test_hardware_command_on_this_machine_says_cpu() -> None:
    done = run_vllmd("hardware")
    assert done.returncode == 0, done.stderr
    report = done.json()
    assert report["tier"] == "cpu" and report["variant"] == "cpu" and report["gpus"] == []
    assert report["reason"] is None
    assert isinstance(report["budget_gb"], int) and report["budget_gb"] >= 0
    assert set(report) >= {"tier", "gpus", "system_memory_bytes", "budget_gb", "reason"}


def test_hardware_command_text_form_is_readable() -> None:
    done = run_vllmd("hardware", "--text")
    assert done.returncode == 0 and done.stdout.startswith("Tier: cpu, ")


def test_cpu_variant_command_never_imports_pynvml() -> None:
    code = (
        "import sys; from vllmd.cli import main; code = main(['hardware']); "
        "assert 'pynvml' not in sys.modules, 'pynvml was imported'; sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=vllmd_env(), cwd=ROOT
    )
    assert done.returncode == 0, done.stderr


# ---- NVML that does not load: the linker cache, refreshed once ---------------------------------

LIBRARY_NOT_FOUND = 12
"""pynvml's code when libnvidia-ml.so.1 does not load."""


class Linker:
    """A linker-cache refresh that records its calls and, when it works, lets NVML load."""

    def __init__(self, fake: FakeNvml, *, fixes: bool, refresh: Refresh | None = None) -> None:
        self.fake, self.fixes = fake, fixes
        self.refresh = refresh or Refresh(True)
        self.calls = 0

    def __call__(self) -> Refresh:
        self.calls += 1
        if self.refresh.done and self.fixes:
            self.fake.recorded.pop("init_error", None)
        return self.refresh


def _unloadable(tmp_path: Path) -> tuple[FakeNvml, Path]:
    machine = load_machine("h100-80gb")
    machine["nvml"]["init_error"] = LIBRARY_NOT_FOUND
    return FakeNvml(machine["nvml"]), machine_root(machine, tmp_path)


def test_when_nvml_does_not_load_the_linker_cache_is_refreshed_once_and_nvml_asked_again(
    tmp_path: Path,
) -> None:
    # given NVML whose library loads only once the linker cache lists it (a fresh subcontainer)
    fake, root = _unloadable(tmp_path)
    linker = Linker(fake, fixes=True)
    # when detecting
    found = detect("nvidia", root=root, nvml_loader=lambda: fake, refresh_linker=linker)
    # then the cache was refreshed once, the GPU found, and the notes say why it took that
    assert linker.calls == 1
    assert found.tier == "nvidia-hopper" and found.reason is None
    assert any("ldconfig" in note and "libnvidia-ml.so.1" in note for note in found.notes)


def test_when_nvml_still_does_not_load_detection_falls_back_after_one_refresh(
    tmp_path: Path,
) -> None:
    fake, root = _unloadable(tmp_path)
    linker = Linker(fake, fixes=False)
    found = detect("nvidia", root=root, nvml_loader=lambda: fake, refresh_linker=linker)
    assert linker.calls == 1
    assert found.tier == "cpu" and found.reason is not None and "NVML failed" in found.reason
    assert any("still did not" in note for note in found.notes)


def test_without_root_the_linker_cache_is_not_refreshed_and_the_notes_say_so(
    tmp_path: Path,
) -> None:
    fake, root = _unloadable(tmp_path)
    problem = "vllmd does not run as root, so it cannot refresh the linker cache"
    linker = Linker(fake, fixes=True, refresh=Refresh(False, problem, tried=False))
    found = detect("nvidia", root=root, nvml_loader=lambda: fake, refresh_linker=linker)
    assert found.tier == "cpu" and any(problem in note for note in found.notes)


def test_an_nvml_failure_the_linker_cannot_fix_refreshes_nothing(tmp_path: Path) -> None:
    machine = load_machine("h100-80gb")
    machine["nvml"]["init_error"] = 9  # the driver is not loaded: a library was found
    fake = FakeNvml(machine["nvml"])
    linker = Linker(fake, fixes=True)
    found = detect(
        "nvidia", root=machine_root(machine, tmp_path), nvml_loader=lambda: fake,
        refresh_linker=linker,
    )  # fmt: skip
    assert linker.calls == 0 and found.tier == "cpu"


def _completed(code: int, err: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.CompletedProcess(["ldconfig"], code, b"", err)


@pytest.mark.parametrize(
    ("euid", "program", "code", "expect"),
    [
        (0, "/sbin/ldconfig", 0, Refresh(True)),
        (1000, "/sbin/ldconfig", 0, None),  # not root: not tried
        (0, None, 0, None),  # no ldconfig: not tried
        (0, "/sbin/ldconfig", 1, Refresh(False, "ldconfig exited with status 1: boom")),
    ],
)
def test_the_linker_cache_is_refreshed_only_as_root_with_an_ldconfig(
    euid: int, program: str | None, code: int, expect: Refresh | None
) -> None:
    ran: list[list[str]] = []

    def run(argv: Any) -> subprocess.CompletedProcess[bytes]:
        ran.append(list(argv))
        return _completed(code, b"boom\n")

    refresh = refresh_linker_cache(euid=lambda: euid, program=lambda: program, run=run)
    if expect is None:
        assert not refresh.tried and not refresh.done and refresh.problem and ran == []
    else:
        assert refresh == expect and ran == [[program]]


def _nvml_loads_here() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return False
    pynvml.nvmlShutdown()
    return True


@pytest.mark.skipif(os.geteuid() != 0, reason="the linker cache is refreshed only as root")
@pytest.mark.skipif(_nvml_loads_here(), reason="NVML loads on this machine: nothing to refresh")
@pytest.mark.parametrize(
    "command",
    [
        ["hardware", "--variant", "nvidia"],
        ["action", "set-model", "--form", "--variant", "nvidia"],
        ["action", "set-model", "--preset", "qwen3-0.6b", "--variant", "nvidia", "--force"],
    ],
    ids=["hardware", "set-model-form", "set-model"],
)
def test_every_command_that_detects_refreshes_the_linker_cache_once(
    tmp_path: Path, command: list[str]
) -> None:
    # given a machine where NVML's library does not load (none here), as root, and an ldconfig
    # that records its calls
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "ldconfig-calls"
    (bin_dir / "ldconfig").write_text(f"#!/bin/sh\necho called >> {calls}\n")
    (bin_dir / "ldconfig").chmod(0o755)
    env = vllmd_env(PATH=f"{bin_dir}:{os.environ['PATH']}")
    volumes = [f"--data={tmp_path / 'data'}", f"--public={tmp_path / 'public'}",
               f"--run-dir={tmp_path / 'run'}"]  # fmt: skip
    # when the command detects the hardware
    done = run_vllmd(*command, *(volumes if command[0] == "action" else ()), env=env)
    # then ldconfig ran once before detection gave up on NVML
    assert calls.read_text() == "called\n", done.stderr
    if "--preset" not in command:
        out = done.json()
        notes = out.get("hardware", out)["notes"]
        assert any("libnvidia-ml.so.1" in note and "ldconfig" in note for note in notes)
