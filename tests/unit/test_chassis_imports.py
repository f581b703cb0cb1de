"""The chassis knows no app: no module under shared/ imports `services` (absolute `import` or
`from ... import`, at the top or inside a function). A service reaches the chassis only through
its registry entry, dotted names the chassis imports with importlib (shared/services.py)."""

from __future__ import annotations

import ast

from shared.db import ROOT

SHARED = ROOT / "shared"
APPS = "services"


def app_imports(source: str) -> list[tuple[int, str]]:
    """(line, the import as written) of every absolute import of `services` in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(name == APPS or name.startswith(APPS + ".") for name in names):
            found.append((node.lineno, ast.get_source_segment(source, node) or ", ".join(names)))
    return found


def test_no_module_of_the_chassis_imports_a_service():
    modules = sorted(SHARED.rglob("*.py"))
    assert SHARED / "cli" / "__init__.py" in modules and SHARED / "demo.py" in modules
    offending = [
        f"{path.relative_to(ROOT)}:{line}: {statement}"
        for path in modules
        for line, statement in app_imports(path.read_text(encoding="utf-8"))
    ]
    assert not offending, "the chassis imports an app:\n" + "\n".join(offending)


def test_the_check_finds_every_form_and_only_those():
    source = "\n".join(
        [
            "import services",
            "import os, services.ledger.demo as seed",
            "from services import calls",
            "from services.ledger.books import Books",
            "def later():",
            "    from services.calls import demo",
            "from shared import services",  # the chassis's registry module
            "from .services import registry",  # relative: inside shared/
            "import servicesx",
            "NAME = 'services.ledger.demo'",  # a dotted name for importlib is not an import
        ]
    )
    assert [line for line, _ in app_imports(source)] == [1, 2, 3, 4, 6]
    assert app_imports(source)[3] == (4, "from services.ledger.books import Books")
