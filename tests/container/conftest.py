"""The container tier: vllmd's cpu image, built and driven through podman as a user would.

The images are built once per session, right after collection and outside every test's timeout (a
cold build takes minutes). Without podman the tier is skipped with the reason, except in CI (``CI``
set), where a missing runtime or a failed build fails every container test loudly. Each test module
is a chain of steps, one test per promise, in file order; once a step fails, the later ones fail
at once instead of waiting out their deadlines.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from container import images
from tests.conftest import say_uncaptured

FIGURES: dict[str, str] = {}
"""Measured figures, printed at the end of the session (build time, image size, time to healthy)."""
_PREPARED = pytest.StashKey["images.Engine | str"]()
_BROKEN = pytest.StashKey[str]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the images when container tests are selected, before any test's timeout starts."""
    if not any(item.get_closest_marker("container") for item in session.items):
        return
    say = say_uncaptured(session)

    started = time.monotonic()
    found = images.find_engine()
    prepared: images.Engine | str = found
    if not isinstance(found, str):
        try:
            prepared, figures = images.prepare(say)
            FIGURES.update(figures)
        except (images.ImageError, OSError) as exc:
            prepared = f"building the images failed: {exc}"
    FIGURES["prepare"] = f"{time.monotonic() - started:.0f} s"
    session.config.stash[_PREPARED] = prepared


@pytest.fixture(scope="session")
def engine(request: pytest.FixtureRequest) -> images.Engine:
    """podman with the image built; skips without podman, fails loudly in CI."""
    prepared = request.config.stash.get(_PREPARED, None)
    if prepared is None:
        prepared = "the images were not prepared (collected without the tier's hook)"
    if isinstance(prepared, str):
        verdict, message = images.unprepared_verdict(prepared, ci=bool(os.environ.get("CI")))
        if verdict == "fail":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return prepared


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    failed = call.excinfo is not None and not call.excinfo.errisinstance(pytest.skip.Exception)
    if failed and call.when in ("setup", "call") and item.parent is not None:
        item.parent.stash[_BROKEN] = item.name


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.parent is not None:
        broken = item.parent.stash.get(_BROKEN, None)
        if broken is not None:
            pytest.fail(f"an earlier step of this chain failed: {broken}", pytrace=False)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if len(FIGURES) > 1:
        terminalreporter.section("container figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")
