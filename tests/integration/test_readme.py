"""The README stays true: every command in its `sh` blocks is one that works.

- `make <target>`: the Makefile has the target, and what its recipe runs exists (`lavoro ...`
  answers `--help`, a tool is in the venv, a Python module imports), without running the
  target itself (`make test` would run this very suite);
- `lavoro ...` (or `.venv/bin/lavoro ...`): the command and its options parse (`--help`, which
  typer reads after every option). tests/e2e/test_demo.py runs them for real against a
  running system, with `readme_lavoro_commands()`;
- any other command names a file of the checkout or a program on the PATH;
- the documents it links to exist, and the sample table of `make run` has the columns
  `lavoro run` prints (tests/e2e/test_demo.py compares it with the real output).
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import sys
from pathlib import Path

from typer.testing import CliRunner

from shared.cli import app
from shared.db import ROOT

README = ROOT / "README.md"
MAKEFILE = ROOT / "Makefile"
BOX = re.compile(r"[\u2500-\u257f]")  # rich's table borders
runner = CliRunner()


def readme_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def readme_commands() -> list[list[str]]:
    """Each command line of the README's `sh` blocks, as words (comments dropped)."""
    commands = []
    for block in readme_blocks("sh"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def _lavoro_args(words: list[str]) -> list[str] | None:
    if Path(words[0]).name != "lavoro":
        return None
    args = words[1:]
    end = next((i for i, word in enumerate(args) if word in (">", "<", "|", "&&")), len(args))
    return args[:end]


def readme_lavoro_commands() -> list[list[str]]:
    """The arguments of every `lavoro` command the README shows."""
    return [args for words in readme_commands() if (args := _lavoro_args(words)) is not None]


def table_words(text: str) -> str:
    """A rich table's text without its borders, one space between words."""
    return " ".join(BOX.sub(" ", text).split())


def readme_run_table_header() -> str:
    """The header row of the table the README says `make run` prints."""
    for block in readme_blocks("text"):
        if "lavoro is running" in block:
            header = next(line for line in block.splitlines() if "service" in line)
            return table_words(header)
    raise AssertionError("the README shows no `lavoro is running` table")


def make_targets() -> dict[str, list[str]]:
    """target -> its recipe lines, with the Makefile's variables filled in."""
    text = MAKEFILE.read_text(encoding="utf-8")
    variables: dict[str, str] = {}
    for name, value in re.findall(r"^(\w+)\s*(?:\?=|:=|=)\s*(.*)$", text, re.M):
        variables[name] = value.strip()

    def expand(line: str) -> str:
        for _ in range(5):  # variables made of variables: $(BIN) is $(VENV)/bin
            line = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), m.group(0)), line)
        return line

    targets: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("\t") and current is not None:
            current.append(expand(line.strip()))
            continue
        match = re.match(r"^([\w.$()/-]+):(?!=)", line)
        current = None
        if match and not line.startswith("."):
            current = targets.setdefault(expand(match.group(1)), [])
    return targets


def assert_runs(recipe: str) -> None:
    """What one recipe line runs exists (without running it)."""
    words = shlex.split(recipe)
    program, args = words[0], words[1:]
    if Path(program).name == "lavoro":
        assert (ROOT / program).exists() or shutil.which(program), program
        assert_lavoro_parses(args)
    elif Path(program).name.startswith("python") and args[:1] == ["-m"]:
        assert importlib.util.find_spec(args[1]) is not None, recipe
    elif program in ("test", "touch", "rm"):
        pass  # the shell's own tools
    else:
        venv_tool = ROOT / program
        assert venv_tool.exists() or (Path(sys.executable).parent / Path(program).name).exists(), (
            recipe
        )


def assert_lavoro_parses(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, (args, result.output)
    assert "Usage: " in result.output and "Example: lavoro" in result.output, args


def test_every_make_target_in_the_readme_exists_and_what_it_runs_is_there():
    targets = make_targets()
    named = [words[1] for words in readme_commands() if words[0] == "make"]
    assert {"run", "test"} <= set(named)
    for target in named:
        assert target in targets, (
            f"the README names `make {target}`; the Makefile has no such target"
        )
        recipe = [line for line in targets[target] if not line.startswith("$(")]
        assert recipe, f"`make {target}` runs nothing"
        for line in recipe:
            assert_runs(line)
    assert any("lavoro run" in line for line in targets["run"])


def test_every_lavoro_command_in_the_readme_parses_with_its_options():
    commands = readme_lavoro_commands()
    assert {tuple(args[:1]) for args in commands} >= {("run",), ("demo",), ("status",)}
    assert ["ledger", "progress"] in [args[:2] for args in commands]
    for args in commands:
        assert_lavoro_parses(args)


def test_every_other_command_in_the_readme_names_something_that_exists():
    for words in readme_commands():
        if words[0] == "make" or _lavoro_args(words) is not None:
            continue
        program = words[1] if words[0] in ("bash", "sh") else words[0]
        assert (ROOT / program).exists() or shutil.which(program), words


def test_the_documents_the_readme_links_exist_and_the_run_table_is_the_real_one():
    links = re.findall(r"\]\(([^)#]+)\)", README.read_text(encoding="utf-8"))
    local = [link for link in links if "://" not in link]
    assert {"docs/operations.md", "docs/architecture.md"} <= set(local)
    for link in local:
        assert (ROOT / link).exists(), link
    header = readme_run_table_header()
    assert header.split() == ["service", "HTTP", "OpenAPI", "database", "pid"]
    # The same columns, in the same order, as `lavoro run` adds them.
    source = (ROOT / "shared" / "cli" / "run.py").read_text(encoding="utf-8")
    assert '("service", "HTTP", "OpenAPI", "database", "pid")' in source
