"""The packages stand in layers: each may import only the packages its layer declares, so no two import each
other and a newcomer can answer "what may policies/ import?" from LAYERS alone (docs/architecture.md draws it).

The walk reads every import statement (ast), wherever it is: at the top, inside a function, under
TYPE_CHECKING. A new top-level package must be given its place here before it can be imported.
"""

from __future__ import annotations

import ast
import tomllib
from graphlib import TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What each package may import besides itself; every package here imports nothing above it.
LAYERS: dict[str, set[str]] = {
    "corpora": set(),  # the data sets the package ships
    "text": set(),  # folding, needles, prefilters, identifiers, refusal rules: pure text
    "protocol": set(),  # the wire: exchange, errors, SSE, the task header, OpenTelemetry conventions
    "config": {"protocol"},  # one strict model, a module per section
    "upstreams": {"config", "protocol"},  # routing, forwarding and retries, the HTTP and translated clients
    "pipeline": {"config", "protocol", "text"},  # the sample contract, pseudonymisation, the queue, the store
    "policies": {"config", "pipeline", "protocol", "text"},  # packs, checks, the engine
    "judges": {"config", "corpora", "pipeline", "policies", "protocol", "text", "upstreams"},
    "gateway": {"config", "judges", "pipeline", "policies", "protocol", "text", "upstreams"},
}


def _packages() -> list[str]:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return [p.rstrip("*") for p in setuptools["packages"]["find"]["include"]]


def imported_packages(path: Path, packages: set[str]) -> list[tuple[int, str]]:
    """(line, package) for every import in ``path`` of one of ``packages``, absolute or relative."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import; the project imports absolutely"
            names = [node.module or ""]
        else:
            continue
        found += [(node.lineno, top) for top in (name.split(".")[0] for name in names) if top in packages]
    return found


def violations(layers: dict[str, set[str]], root: Path) -> list[str]:
    wrong = []
    for package, allowed in layers.items():
        for path in sorted((root / package).rglob("*.py")):
            for line, imported in imported_packages(path, set(layers)):
                if imported != package and imported not in allowed:
                    wrong.append(f"{path.relative_to(root)}:{line}: {package} may not import {imported}")
    return wrong


def test_every_package_has_a_layer() -> None:
    assert sorted(_packages()) == sorted(LAYERS)


def test_the_layers_have_no_cycle() -> None:
    order = list(TopologicalSorter(LAYERS).static_order())  # raises CycleError on a cycle
    assert order.index("text") < order.index("policies") < order.index("judges") < order.index("gateway")


def test_no_package_imports_against_the_layers() -> None:
    assert violations(LAYERS, ROOT) == []


def test_the_walk_finds_a_forbidden_import_wherever_it_is(tmp_path: Path) -> None:
    (tmp_path / "low").mkdir()
    (tmp_path / "high").mkdir()
    (tmp_path / "low" / "a.py").write_text(
        "import os\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from high.b import B\n"
        "def f():\n    import high.c\n"
    )
    (tmp_path / "high" / "b.py").write_text("from low.a import f\n")
    wrong = violations({"low": set(), "high": {"low"}}, tmp_path)
    assert wrong == ["low/a.py:4: low may not import high", "low/a.py:6: low may not import high"]


def test_a_relative_import_is_refused(tmp_path: Path) -> None:
    (tmp_path / "low").mkdir()
    (tmp_path / "low" / "a.py").write_text("from . import b\n")
    with pytest.raises(AssertionError, match="relative import"):
        violations({"low": set()}, tmp_path)
