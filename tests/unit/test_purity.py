"""The pure modules load no framework (STYLE: "Domain is pure").

Each is imported alone in a fresh interpreter, which must then hold none of the database, broker,
green-thread or edge libraries. The chassis's pure modules are named here; a service's are found:
its `commands.py`, `state.py`, `domain.py`, every module of a `domain/` package, and the modules
of the same service those import (read from their import statements), each its own test case.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FORBIDDEN = ("sqlalchemy", "nameko", "kombu", "eventlet", "marshmallow", "werkzeug")
CHASSIS = (
    "shared.canonical",
    "shared.chain",
    "shared.clock",
    "shared.days",
    "shared.errors",
    "shared.money",
    "shared.records",
)
ENTRY_FILES = ("commands.py", "state.py", "domain.py")

# Run in the child: record who first imports each forbidden package (the module frames on the
# stack at that moment), import the module under test, print one line per forbidden package loaded.
CHILD = """
import importlib, sys
forbidden, chains = set(sys.argv[2].split(",")), {}

class Watch:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in forbidden and top not in chains:
            importers, frame = [], sys._getframe(1)
            while frame is not None:
                module = frame.f_globals.get("__name__", "")
                if not module.startswith(("importlib", "_frozen_importlib", "__main__")):
                    if module not in importers:
                        importers.append(module)
                frame = frame.f_back
            chains[top] = " <- ".join(importers)
        return None

sys.meta_path.insert(0, Watch())
importlib.import_module(sys.argv[1])
for top in sorted(forbidden & {name.partition(".")[0] for name in sys.modules}):
    print(f"{top} (imported by {chains.get(top) or '?'})")
"""


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _local_imports(path: pathlib.Path, package: pathlib.Path) -> set[pathlib.Path]:
    """Files of the service `package` that `path` imports, relatively or by absolute name."""
    name = _module_name(package)
    wanted: list[tuple[pathlib.Path, str, list[str]]] = []  # (base, module below it, names)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(name + "."):
                    wanted.append((package, alias.name[len(name) + 1 :], []))
        elif isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names]
            if node.level:
                wanted.append((path.parents[node.level - 1], node.module or "", names))
            elif node.module == name or (node.module or "").startswith(name + "."):
                wanted.append((package, node.module[len(name) + 1 :], names))
    found: set[pathlib.Path] = set()
    for base, module, names in wanted:
        target = base.joinpath(*module.split(".")) if module else base
        candidates = [target.with_suffix(".py"), target / "__init__.py"] if module else []
        # `from . import entries`, `from .rules import ZERO`: a name may be a module too.
        candidates += [target / f"{n}.py" for n in names] + [
            target / n / "__init__.py" for n in names
        ]
        found.update(c for c in candidates if c.is_file() and package in c.parents)
    return found


def service_modules() -> list[str]:
    """The pure modules of every service under services/, entry points and what they import."""
    todo: list[tuple[pathlib.Path, pathlib.Path]] = []
    for package in sorted(p for p in (ROOT / "services").iterdir() if p.is_dir()):
        if not (package / "__init__.py").is_file():
            continue
        todo += [(package / name, package) for name in ENTRY_FILES if (package / name).is_file()]
        if (package / "domain" / "__init__.py").is_file():
            todo += [(path, package) for path in sorted((package / "domain").rglob("*.py"))]
    seen: set[pathlib.Path] = set()
    while todo:
        path, package = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += [(found, package) for found in _local_imports(path, package)]
    return sorted(_module_name(path) for path in seen)


SERVICE_MODULES = service_modules()


def test_the_service_modules_are_found():
    assert SERVICE_MODULES, "no commands.py, state.py, domain.py or domain/ found under services/"
    assert any(name.endswith(".domain") for name in SERVICE_MODULES)


@pytest.mark.parametrize("module", [*CHASSIS, *SERVICE_MODULES])
def test_a_pure_module_loads_no_framework(module):
    result = subprocess.run(
        [sys.executable, "-c", CHILD, module, ",".join(FORBIDDEN)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"importing {module} failed:\n{result.stderr}"
    loaded = result.stdout.strip().splitlines()
    assert not loaded, f"{module} is not pure: it loads " + "; ".join(loaded)
