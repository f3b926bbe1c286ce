"""Find the .py files of the standard library and the installed dependencies, and read them.

Nothing is imported: packages are located with `importlib.util.find_spec`; tests, vendored and
generated code are left out. `installed_versions` names what the files came from.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import os
import platform
import sysconfig
import tokenize
from dataclasses import dataclass
from pathlib import Path

# The project's dependencies (and scipy, which jax needs) by import name -> distribution name.
DEFAULT_PACKAGES: dict[str, str] = {
    "numpy": "numpy",
    "scipy": "scipy",
    "jax": "jax",
    "flax": "flax",
    "optax": "optax",
    "orbax": "orbax-checkpoint",
    "grain": "grain",
    "tensorflow_datasets": "tensorflow-datasets",
    "hydra": "hydra-core",
    "omegaconf": "omegaconf",
    "pyarrow": "pyarrow",
    "matplotlib": "matplotlib",
}
_SKIP_DIRS = frozenset(
    {
        "__pycache__",
        "site-packages",
        "dist-packages",
        "test",
        "tests",
        "testing",
        "idlelib",
        "lib2to3",
        "turtledemo",
        "ensurepip",
        "encodings",
        "_vendor",
        "vendored",
        "third_party",
        "examples",
    }
)


@dataclass(frozen=True)
class PyFile:
    """One .py file: ``origin`` is "stdlib" or the package's import name; ``rel`` its stable name."""

    origin: str
    path: Path
    rel: str  # e.g. "stdlib/json/decoder.py", "numpy/linalg/_linalg.py"


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def package_root(name: str) -> Path | None:
    """Directory of the installed package ``name`` (namespace packages too), found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(sorted(spec.submodule_search_locations)[0])


def python_files(root: Path, origin: str, prefix: str) -> list[PyFile]:
    """The .py files under ``root`` that are library code (no tests, vendored or generated files), sorted."""
    files: list[PyFile] = []
    for directory, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(names):
            if not name.endswith(".py") or name.startswith("test_") or name.endswith("_test.py"):
                continue
            if name in ("conftest.py", "setup.py"):
                continue
            path = Path(directory) / name
            rel = path.relative_to(root).as_posix()
            files.append(PyFile(origin, path, f"{prefix}/{rel}"))
    return files


def installed_versions(packages: tuple[str, ...] = tuple(DEFAULT_PACKAGES)) -> dict[str, str]:
    """Python's version and each installed package's version: the corpus is a function of these."""
    versions = {"python": platform.python_version()}
    for name in packages:
        dist = DEFAULT_PACKAGES.get(name, name)
        try:
            versions[name] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def read_source(path: Path) -> str:
    """A .py file's text in its declared encoding (PEP 263)."""
    data = path.read_bytes()
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    return data.decode(encoding)
