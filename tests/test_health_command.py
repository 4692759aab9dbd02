"""``vllmd health`` is cheap (issue 17 item 6): StartOS runs it about once a second until the first
success, so it answers before the command line is built, importing only what it needs, and it
answers exactly as the full command line does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from actions_support import ROOT, vllmd_env

HEAVY = {"anyio", "msgspec", "argparse", "logging", "typing", "pathlib", "dataclasses"}
"""What ``vllmd health`` must not load: the event loop, schemas, the command line's machinery."""
ALLOWED_OURS = {
    "vllmd",
    "vllmd.__main__",
    "vllmd.options",
    "vllmd.daemon",
    "vllmd.daemon.healthcheck",
    "vllmd.process",
    "vllmd.process.proc",
    "vllmd.state",
    "vllmd.state.readfile",
    "vllmd.core",
    "vllmd.core.errors",
}


def _health_with_modules(*args: str, env: dict[str, str]) -> tuple[int, list[str]]:
    """Run ``vllmd health ARGS`` as the command does (``__main__.main``) in a fresh interpreter;
    its exit code and the modules it loaded."""
    script = (
        "import json, sys\n"
        f"sys.argv = ['vllmd', 'health', *{list(args)!r}]\n"
        "before = set(sys.modules)\n"
        "from vllmd.__main__ import main\n"
        "code = main()\n"
        "print(json.dumps([code, sorted(set(sys.modules) - before)]))\n"
    )
    done = _python(["-c", script], env)
    assert done.returncode == 0, done.stderr
    code, modules = json.loads(done.stdout.splitlines()[-1])
    return code, modules


def test_vllmd_health_imports_neither_the_daemon_nor_the_command_lines_machinery(
    tmp_path: Path,
) -> None:
    # given no daemon (exit 2) and, in turn, a report in the run folder (exit 1 or 0)
    code, modules = _health_with_modules(f"--run-dir={tmp_path}", env=vllmd_env())
    assert code == 2
    # then what it loaded is the reader alone
    ours = {m for m in modules if m.split(".")[0] == "vllmd"}
    assert ours <= ALLOWED_OURS, sorted(ours - ALLOWED_OURS)
    assert not {m.split(".")[0] for m in modules} & HEAVY


def _python(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """This interpreter run with ``args`` in the checkout, its output as text."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def _run(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """``vllmd ARGV`` as the console command runs it (``__main__``)."""
    done = _python(["-m", "vllmd", *argv], env)
    return done.returncode, done.stdout, done.stderr


def _parsed(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """The same command through the full command line (``vllmd.cli.main``)."""
    done = _python(
        ["-c", f"import sys\nfrom vllmd.cli import main\nsys.exit(main({argv!r}))\n"], env
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize(
    ("args", "env_run_dir"),
    [
        (["--run-dir", "{run}"], False),
        (["--run-dir={run}", "--text"], False),
        (["--text"], True),
        (["--data", "{run}/d", "--public={run}/p", "--run-dir", "{run}"], False),
        (["--run-dir", "{run}/elsewhere"], False),
        (["--run-dir="], False),  # an empty value: the parser's error
        (["--run"], True),  # an abbreviation argparse takes
        (["--nope"], True),  # a mistake: the parser's usage error
        (["--run-dir"], True),  # a flag without its value
    ],
)
@pytest.mark.parametrize("report", ["none", "stale", "garbage"])
def test_vllmd_health_answers_as_the_full_command_line_does(
    tmp_path: Path, args: list[str], env_run_dir: bool, report: str
) -> None:
    # given a run folder with no report, a stale one (no such run), or one that is not a report
    run = tmp_path / "run"
    run.mkdir()
    if report == "stale":
        document = {
            "result": "success",
            "message": "The vLLM API is ready",
            "instance": {"boot_id": "x", "pid": 2**22 + 1, "started": 1},
        }
        (run / "health.json").write_text(json.dumps(document))
    elif report == "garbage":
        (run / "health.json").write_text("[1, 2")
    argv = ["health", *(a.replace("{run}", str(run)) for a in args)]
    env = vllmd_env(**({"VLLMD_RUN_DIR": str(run)} if env_run_dir else {}))
    # when it runs as the command, and through the full command line
    fast, full = _run(argv, env), _parsed(argv, env)
    # then both answer alike: exit code, output, error
    assert fast == full


def test_a_live_report_is_printed_as_the_full_command_line_prints_it(tmp_path: Path) -> None:
    # given a report whose run is a process that runs as `vllmd run` (its command line names
    # vllmd, and it is not `vllmd health`)
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()", "vllmd", "run"],
        stdin=subprocess.PIPE,
    )
    try:
        from vllmd.process.proc import boot_id, start_time

        document = {
            "result": "loading",
            "message": "The vLLM API is starting. ✓",
            "since": 1.5,
            "pid": holder.pid,
            "task": None,
            "detail": {"phase": "loading", "fetch": {"message": "1 of 2 files"}},
            "instance": {
                "boot_id": boot_id(),
                "pid": holder.pid,
                "started": start_time(holder.pid),
            },
        }
        (run / "health.json").write_text(json.dumps(document, indent=2, ensure_ascii=False))
        for extra in ([], ["--text"]):
            argv = ["health", f"--run-dir={run}", *extra]
            fast, full = _run(argv, vllmd_env()), _parsed(argv, vllmd_env())
            assert fast == full and fast[0] == 1, fast
        assert json.loads(_run(["health", f"--run-dir={run}"], vllmd_env())[1]) == document
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)


def test_health_help_is_the_command_lines() -> None:
    code, out, _ = _run(["health", "--help"], vllmd_env())
    assert code == 0 and "usage: vllmd health" in out
