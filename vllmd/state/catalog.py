"""The bundled preset catalog: where the file is, and reading it (its rules are in core).

The catalog ships with vllmd (``config/presets.toml``); :mod:`vllmd.core.presets` decodes and checks
it without I/O.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from vllmd.core.presets import Catalog, CatalogError, parse_catalog


def catalog_path(package: Traversable | None = None) -> Path:
    """Where the bundled catalog is: inside the installed package, else in the source checkout.

    A wheel carries it as ``vllmd/_config/presets.toml`` (pyproject force-includes it); a source
    checkout has it at ``config/presets.toml`` beside the ``vllmd`` package. ``package`` stands
    for the installed ``vllmd`` package's files (default: the one imported).
    """
    package = resources.files("vllmd") if package is None else package
    bundled = package / "_config" / "presets.toml"
    if bundled.is_file():
        return Path(str(bundled))
    # The checkout's folder is found from the package root, not by counting this module's parents,
    # so the module can move within the package.
    return Path(str(resources.files("vllmd"))).resolve().parent / "config" / "presets.toml"


def load_catalog(path: Path | None = None) -> Catalog:
    """Read and check the catalog at ``path`` (default: :func:`catalog_path`)."""
    path = catalog_path() if path is None else path
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CatalogError(
            f"{path}: cannot read the preset catalog ({exc.strerror or exc}).",
            "The installation is incomplete: reinstall vllmd.",
        ) from exc
    return parse_catalog(data, str(path))
