"""The two services `bench.e2e` measures, each run in its own process as in production:
`python -m bench.e2e_services alpha|beta <workdir> <suffix>`.

alpha takes an HTTP command and appends `order_placed`; its relay publishes it. beta handles it
through the chassis consumer and writes `<order id> <wall-clock time>` to `<workdir>/handled.txt`.
"""

from __future__ import annotations

import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402

eventlet.monkey_patch()

import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import structlog  # noqa: E402
from marshmallow import fields  # noqa: E402
from nameko.containers import ServiceContainer  # noqa: E402

from bench.common import AMQP_URI  # noqa: E402
from shared.consumer import handles  # noqa: E402
from shared.dependencies import EventStore  # noqa: E402
from shared.records import IncomingEvent, NewEvent  # noqa: E402
from shared.relay import RelayExtension  # noqa: E402
from shared.schemas import Money, Schema  # noqa: E402
from shared.web import bound_port, command, json_response  # noqa: E402

TOKEN = "bench-operator"


class Place(Schema):
    order_id = fields.String(required=True)
    amount = Money(required=True)


def services(suffix: str, workdir: Path) -> dict[str, type]:
    alpha_name, beta_name = f"bencha{suffix}", f"benchb{suffix}"
    out = (workdir / "handled.txt").open("a", buffering=1)

    class Alpha:
        name = alpha_name
        store = EventStore()
        relay = RelayExtension()

        @command("POST", "/orders", schema=Place)
        def place(self, cmd):
            order = cmd.data["order_id"]
            self.store.append(
                f"order-{order}",
                0,
                [NewEvent("order_placed", {"order_id": order, "amount": "10.00"})],
                command_id=cmd.id,
            )
            return json_response(201, {"order_id": order})

    class Beta:
        name = beta_name
        store = EventStore()

        @handles(alpha_name, "order_placed")
        def on_order(self, event: IncomingEvent) -> None:
            out.write(f"{event.data['order_id']} {time.time()}\n")

    return {"alpha": Alpha, "beta": Beta}


def main() -> None:
    which, workdir, suffix = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.getLogger().setLevel(logging.WARNING)
    config = {
        "AMQP_URI": AMQP_URI,
        "LAVORO_TOKENS": f"bench:operator:{TOKEN}",
        "WEB_SERVER_ADDRESS": "127.0.0.1:0",
        "DATABASE_URL": f"sqlite:///{workdir / which}.db",
        "max_workers": 50,
    }
    container = ServiceContainer(services(suffix, workdir)[which], config)
    container.start()
    if which == "alpha":
        (workdir / "alpha.port").write_text(str(bound_port(container)))
    else:
        (workdir / "beta.ready").write_text("ready")
    stopped = eventlet.event.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.send(True))
    stopped.wait()
    container.stop()


if __name__ == "__main__":
    main()
