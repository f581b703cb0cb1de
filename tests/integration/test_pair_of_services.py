"""The chassis proved end to end on the real broker with a test-only pair of services.

A command over HTTP in `alpha` appends `order_placed`; alpha's relay publishes it; `beta` handles it
through the chassis consumer and appends `order_acknowledged`, which beta's projection folds into
a read model. Mid-stream the broker kills the relay's and the consumer's connections, and alpha's
process (its relay with it) is restarted. In the end every order is acknowledged exactly once, in
beta's log and read model, and both logs verify."""

from __future__ import annotations

from decimal import Decimal

import eventlet
import sqlalchemy as sa

from shared import tables as t
from shared.consumer import handles
from shared.dependencies import EventStore
from shared.projections import Amount, Projection
from shared.records import IncomingEvent, NewEvent
from shared.relay import RelayExtension
from shared.schemas import Money, Schema
from shared.web import command, json_response
from tests.helpers import close_rabbitmq_connections, wait_for
from tests.kit.http import Client

ORDERS = 60


class PlaceOrder(Schema):
    from marshmallow import fields

    order_id = fields.String(required=True)
    amount = Money(required=True)


acks_metadata = sa.MetaData()
acks = sa.Table(
    "acks",
    acks_metadata,
    sa.Column("order_id", sa.String(60), primary_key=True),
    sa.Column("amount", Amount, nullable=False),
    sa.Column("times", sa.Integer, nullable=False),
)
acks_projection = Projection("acks", acks_metadata)


@acks_projection.on("order_acknowledged")
def _fold_ack(conn, event):
    updated = conn.execute(
        acks.update()
        .where(acks.c.order_id == event.data["order_id"])
        .values(times=acks.c.times + 1)
    ).rowcount
    if not updated:
        conn.execute(
            acks.insert().values(
                order_id=event.data["order_id"], amount=Decimal(event.data["amount"]), times=1
            )
        )


class Alpha:
    name = "alpha"
    store = EventStore()
    relay = RelayExtension(poll_interval=0.2, backoff=(0.05, 0.5))

    @command("POST", "/orders", schema=PlaceOrder)
    def place(self, cmd):
        data = cmd.data
        result = self.store.append(
            f"order-{data['order_id']}",
            0,
            [
                NewEvent(
                    "order_placed",
                    {"order_id": data["order_id"], "amount": f"{data['amount']:.2f}"},
                )
            ],
            command_id=cmd.id,
        )
        return json_response(201, {"position": result.events[-1].position})


class Beta:
    name = "beta"
    store = EventStore(projections=[acks_projection])

    @handles("alpha", "order_placed")
    def on_order(self, event: IncomingEvent) -> None:
        order = event.data["order_id"]
        self.store.append(
            f"ack-{order}",
            0,
            [NewEvent("order_acknowledged", {"order_id": order, "amount": event.data["amount"]})],
        )


def place(client: Client, n: int) -> int:
    body = {"order_id": f"o{n}", "amount": f"{n}.50"}
    return client.ok("POST", "/orders", body, status=201, key=f"place-o{n}")["position"]


def test_command_event_handler_projection_survive_a_broker_kill_and_a_relay_restart(
    harness, databases
):
    alpha_db, beta_db = databases("alpha"), databases("beta")
    beta = harness.start(Beta, beta_db)
    alpha = harness.start(Alpha, alpha_db)
    client = alpha.client

    pool = eventlet.GreenPool(8)
    list(pool.imap(lambda n: place(client, n), range(ORDERS // 3)))

    # The broker drops both connections mid-stream, while commands keep coming.
    for n in range(ORDERS // 3, 2 * ORDERS // 3):
        pool.spawn(place, client, n)
    assert close_rabbitmq_connections(f"lavoro-relay-{harness.name('alpha')}") == 1
    assert close_rabbitmq_connections(f"lavoro-consumer-{harness.name('beta')}") == 1
    pool.waitall()

    # alpha's process stops (its relay with it) and a new one starts on the same database.
    alpha.container.stop()
    alpha = harness.start(Alpha, alpha_db)
    client = alpha.client
    list(pool.imap(lambda n: place(client, n), range(2 * ORDERS // 3, ORDERS)))
    # A client retrying a command with the same key changes nothing.
    place(client, 0)

    beta_log = beta.log

    def acknowledged() -> int:
        with beta_log.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(acks)).scalar_one()

    wait_for(lambda: acknowledged() == ORDERS, 30, f"{ORDERS} orders acknowledged")

    alpha_log = alpha.log
    placed = [e for e in alpha_log.read_all() if e.type == "order_placed"]
    assert len(placed) == ORDERS
    with beta_log.engine.connect() as conn:
        rows = conn.execute(sa.select(acks)).all()
        inbox_rows = conn.execute(sa.select(sa.func.count()).select_from(t.inbox)).scalar_one()
        parked = conn.execute(sa.select(sa.func.count()).select_from(t.dead_letters)).scalar_one()
    assert {r.order_id for r in rows} == {f"o{n}" for n in range(ORDERS)}
    assert all(r.times == 1 for r in rows)  # exactly once
    assert {r.order_id: r.amount for r in rows}["o7"] == Decimal("7.50")
    assert inbox_rows == ORDERS and parked == 0
    acknowledged_events = [e for e in beta_log.read_all() if e.type == "order_acknowledged"]
    assert len(acknowledged_events) == ORDERS
    by_order = {e.data["order_id"]: e for e in placed}
    for ack in acknowledged_events:
        assert ack.causation_id == by_order[ack.data["order_id"]].id
    assert alpha_log.verify().ok and beta_log.verify().ok
