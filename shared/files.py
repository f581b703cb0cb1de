"""Files lavoro keeps on disk are its owner's alone: folders 0700, files 0600.

`var/` (`LAVORO_VAR`) holds the SQLite databases (the log, its person keys, read models), the
tokens file and the development tokens and KEK; a database file is created 0600 before SQLite
opens it, and SQLite gives its `-wal` and `-shm` files the mode of the database file. Existing
files and folders of ours that are wider are narrowed when lavoro opens them (an older checkout's
`var/` was 0755 with 0644 databases); anyone else's are left as they are.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path | str) -> Path:
    """`path` as a folder only its owner may enter, made (with its parents) if missing."""
    path = Path(path)
    path.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    _narrow(path, FOLDER_MODE)
    return path


def private_file(path: Path | str) -> Path:
    """`path` as a file only its owner may read: created empty if missing, narrowed if ours."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        _narrow(path, FILE_MODE)
    else:
        os.close(fd)
    return path


def narrow_if_present(path: Path | str) -> None:
    """Narrow `path` to 0600 if it exists and is ours."""
    path = Path(path)
    if path.exists():
        _narrow(path, FILE_MODE)


def _narrow(path: Path, mode: int) -> None:
    info = path.stat()
    if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) & ~mode:
        path.chmod(mode)
