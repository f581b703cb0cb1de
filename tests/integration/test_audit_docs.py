"""docs/audit.md's verification script is run on real exports, so the document stays true."""

import re
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from shared.db import disable_append_only, write_transaction
from shared.records import NewEvent

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit.md"


def _script(tmp_path):
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    path = tmp_path / "verify_export.py"
    path.write_text(code)
    return path


def _export(log, tmp_path):
    path = tmp_path / "export.jsonl"
    with path.open("w", encoding="utf-8") as out:
        log.export(out.write)
    return path


def test_the_documented_script_verifies_an_export_and_finds_tampering(log, engine, tmp_path):
    for i in range(6):
        log.append(
            f"s-{i % 2}",
            i // 2,
            [NewEvent("amount_recorded", {"amount": f"{i}.50", "name": "Zoë ü"})],
            actor="op",
        )
    script = _script(tmp_path)
    ok = subprocess.run(
        [sys.executable, str(script), str(_export(log, tmp_path))], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip() == f"OK, 6 events, head 6 {log.head()[1]}"

    with write_transaction(engine) as conn:
        disable_append_only(conn)
        conn.execute(
            sa.text("UPDATE events SET data = :d WHERE position = 4"),
            {"d": '{"amount":"999.00","name":"Zoë ü"}'},
        )
    broken = subprocess.run(
        [sys.executable, str(script), str(_export(log, tmp_path))], capture_output=True, text=True
    )
    assert broken.returncode == 1
    assert broken.stdout.startswith("BROKEN at position 4")
    assert log.verify().broken_at == 4
