"""Listening on a TCP port alone, and saying who has it when it is taken.

eventlet's `listen`, which nameko's web server uses, sets `SO_REUSEPORT`: a second `lavoro run`
on the same host then listened on the same ports as the first, started "fine", and the kernel
shared the requests between two systems with two databases. `listen` here never sets it (only
`SO_REUSEADDR`, so that a restart need not wait for old connections), and a port in use is
`PortInUse`, one line naming the address and, where this user may see it, the process holding it.

`check_free(address)` asks the same question before anything is started (`lavoro run`).
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Any

_LISTEN = "0A"  # the state of a listening socket in /proc/net/tcp


class PortInUse(OSError):
    """The address is taken; the message names it and, if it can be known, who holds it."""

    def __init__(self, host: str, port: int, holder: str | None) -> None:
        self.host = host or "0.0.0.0"
        self.port = port
        self.holder = holder
        who = f"in use by {holder}" if holder else "in use by a process this user cannot see"
        super().__init__(errno.EADDRINUSE, f"cannot listen on {self.host}:{port}: {who}")

    def __str__(self) -> str:
        return str(self.strerror)


def listen(address: tuple[str, int], backlog: int = 50) -> Any:
    """A listening (green) socket on `address`, never shared with another listener."""
    import eventlet

    try:
        return eventlet.listen(address, backlog=backlog, reuse_port=False)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(address[0], address[1], holder(address[1])) from exc
        raise


def check_free(host: str, port: int) -> None:
    """PortInUse unless a listener could be opened on (host, port) now (port 0 always can)."""
    if port == 0:
        return
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            probe.listen(1)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(host, port, holder(port)) from exc
            raise


def holder(port: int, proc: Path = Path("/proc")) -> str | None:
    """`pid 4242 (python -m shared.runner ledger)` for the process listening on `port`, read from
    Linux's /proc; None where that cannot be seen (another user's process, another system).
    Only on the failure path: it reads the open files of every process it may."""
    inodes = _listening_inodes(port, proc)
    if not inodes:
        return None
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        if _links(pid_dir / "fd") & inodes:
            return f"pid {pid_dir.name} ({_command_line(pid_dir)})"
    return None


def _links(fds: Path) -> set[str]:
    """What a process's open files point to; what vanishes meanwhile, or is not ours to see, is
    left out (the listing of our own fd/ holds the descriptor that lists it)."""
    try:
        entries = list(fds.iterdir())
    except OSError:
        return set()
    links = set()
    for fd in entries:
        try:
            links.add(os.readlink(fd))
        except OSError:
            continue
    return links


def _listening_inodes(port: int, proc: Path) -> set[str]:
    found = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            if int(fields[1].rpartition(":")[2], 16) == port:
                found.add(f"socket:[{fields[9]}]")
    return found


def _command_line(pid_dir: Path) -> str:
    try:
        words = (pid_dir / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(word.decode(errors="replace") for word in words if word)
    if words and words[0]:
        first = os.path.basename(words[0].decode(errors="replace"))
        text = " ".join([first, *text.split(" ")[1:]])
    return text[:120] or "?"
