"""The fault suite (`make test-reliability`): calls and ledger as processes of their own on the
real broker and PostgreSQL, under load, while the suite breaks things. Each scenario records its
figures; the table of them all is printed at the end of the run, passed or failed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.figures import Figures, table

_ROWS: list[Figures] = []


def pytest_collection_modifyitems(config, items):
    here = str(config.rootpath / "tests" / "reliability")
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.reliability)


@pytest.fixture
def figures(request) -> Iterator[Figures]:
    """This scenario's row of the table."""
    row = Figures(request.node.name.removeprefix("test_"))
    _ROWS.append(row)
    yield row
    report = getattr(request.node, "rep_call", None)
    row.finish("passed" if report is not None and report.passed else "FAILED")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.rep_call = report
    return report


def pytest_terminal_summary(terminalreporter):
    if not _ROWS:
        return
    terminalreporter.section("fault suite: figures")
    for line in table(_ROWS):
        terminalreporter.write_line(line)
    for row in _ROWS:
        for note in row.notes:
            terminalreporter.write_line(f"{row.scenario}: {note}")
