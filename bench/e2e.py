"""Command → handled in another service: p50 and p99 latency at a steady rate (200 commands/s).

alpha and beta (bench/e2e_services.py) each run in their own process, on SQLite and the local
RabbitMQ; this process is the client. A command's latency runs from just before its HTTP request
is sent to the moment beta's handler has the event (both wall-clock times on this machine).
Requests go out on a fixed schedule (open loop): a slow answer does not slow the rate down.
"""

from __future__ import annotations

import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402

eventlet.monkey_patch()

import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import kombu  # noqa: E402
import requests  # noqa: E402

from bench.common import AMQP_URI, emit, figure  # noqa: E402
from bench.e2e_services import TOKEN  # noqa: E402
from shared.consumer import queue_name  # noqa: E402
from shared.dlq import dlq_name  # noqa: E402

RATE = float(os.environ.get("BENCH_E2E_RATE", "200"))
SECONDS = float(os.environ.get("BENCH_E2E_SECONDS", "10"))
WARMUP = 100


def _wait_for_file(path: Path, seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path.name} never appeared: a service did not start")
        eventlet.sleep(0.05)
    return path.read_text()


def _handled(path: Path) -> dict[str, float]:
    if not path.exists():
        return {}
    seen: dict[str, float] = {}
    for line in path.read_text().splitlines():
        order, stamp = line.split()
        seen.setdefault(order, float(stamp))
    return seen


def main() -> None:
    suffix = uuid.uuid4().hex[:6]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        procs = [
            subprocess.Popen([sys.executable, "-m", "bench.e2e_services", which, tmp, suffix])
            for which in ("beta", "alpha")
        ]
        try:
            _wait_for_file(work / "beta.ready")
            url = f"http://127.0.0.1:{_wait_for_file(work / 'alpha.port')}/orders"
            session = requests.Session()
            sent: dict[str, float] = {}

            def send(n: int) -> None:
                order = f"o{n}"
                sent[order] = time.time()
                headers = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": order}
                session.post(
                    url, json={"order_id": order, "amount": "10.00"}, headers=headers, timeout=30
                ).raise_for_status()

            total = int(RATE * SECONDS) + WARMUP
            pool = eventlet.GreenPool(1000)
            start = time.monotonic()
            for n in range(total):
                delay = start + n / RATE - time.monotonic()
                if delay > 0:
                    eventlet.sleep(delay)
                pool.spawn(send, n)
            pool.waitall()
            achieved = total / (time.monotonic() - start)
            deadline = time.monotonic() + 60
            while len(_handled(work / "handled.txt")) < total and time.monotonic() < deadline:
                eventlet.sleep(0.1)
            handled = _handled(work / "handled.txt")
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)
            with kombu.Connection(AMQP_URI) as conn:
                channel = conn.default_channel
                channel.queue_delete(queue_name(f"benchb{suffix}", f"bencha{suffix}"))
                channel.queue_delete(dlq_name(f"benchb{suffix}"))
                channel.exchange_delete(f"bencha{suffix}.events")
    orders = [f"o{n}" for n in range(WARMUP, total)]
    missing = [o for o in orders if o not in handled]
    if missing:
        raise SystemExit(f"{len(missing)} commands never reached the other service")
    latencies = sorted((handled[o] - sent[o]) * 1000 for o in orders)
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    print(f"e2e: {len(latencies)} commands at {RATE:.0f}/s (client achieved {achieved:.0f}/s)")
    emit(
        {
            "e2e_p50_ms": figure(statistics.median(latencies), "ms", None),
            "e2e_p99_ms": figure(p99, "ms", None),
        }
    )


if __name__ == "__main__":
    main()
