"""`lavoro demo`: the services' demo steps, run in order against the running system through their
public HTTP APIs, then what each service says of the outcome.

The chassis knows no service's steps. A service contributes by naming a module in its registry
entry (`ServiceSpec.demo` in shared/services.py, e.g. `services.ledger.demo`) whose
`contribution` is a `Contribution`:

- `steps(today)`: its steps for a run on that Bologna day, in order. A step has a `label` (the
  progress bar shows it) and `run(demo)`; `Command` is the common one, a POST with a
  deterministic Idempotency-Key;
- `after`: the services whose steps must all have run before its own;
- `outcome(demo)`, once every step has run: an `Outcome`, the members it adds to `--json`, what it
  prints, a verdict for the last line, and a problem that makes `lavoro demo` exit 1.

The chassis orders the contributions (each after those it names, otherwise in registry order),
runs their steps, and reports the outcomes in the same order, ending on one line: the verdicts,
then the commands it took.

Running it twice changes nothing: every command carries the same key each time (`key()`; a
service that has seen a key answers what it did then and appends nothing), and where a service
answers 409 the command's `Check` compares the state it finds with what it sent.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from shared.client import RUN_HINT, Api, ClientError

ROME = ZoneInfo("Europe/Rome")
KEY_PREFIX = "lavoro-demo/v1"
POLL_INTERVAL = 0.2  # seconds between two looks at a read endpoint while waiting


class DemoError(ClientError):
    """Ends the demo with its message on one line."""


# -- what a service contributes -------------------------------------------------------------------


class Step(Protocol):
    """One step of the demo: the progress bar shows its label while it runs."""

    @property
    def label(self) -> str: ...

    def run(self, demo: Demo) -> None: ...


@dataclasses.dataclass(frozen=True)
class Check:
    """How to tell, after a 409, that what the command asked for is already there: GET `path`;
    in the list `within` (or the answer itself) the item matching `match` has the members `same`
    (a tuple: any of its values)."""

    path: str
    same: Mapping[str, Any]
    within: str | None = None
    match: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Command:
    """POST `path` (its `{names}` filled from earlier answers) with `body` and the key `key`;
    `remember` keeps members of the answer under names for later paths."""

    label: str
    service: str
    path: str
    body: Mapping[str, Any] | None
    key: str
    remember: Mapping[str, str] = dataclasses.field(default_factory=dict)  # name -> member
    check: Check | None = None

    def run(self, demo: Demo) -> None:
        demo.command(self)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a service says once every step has run."""

    json: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # members of `--json`
    show: Sequence[Any] = ()  # printed in order: lines, or rich renderables (a table)
    verdict: str | None = None  # the start of the last line
    problem: str | None = None  # set: `lavoro demo` exits 1 with this line


@dataclasses.dataclass(frozen=True)
class Contribution:
    """A service's part of the demo (the `contribution` of the module its registry entry names)."""

    steps: Callable[[dt.date], Sequence[Step]]  # its steps for a run on this Bologna day
    after: tuple[str, ...] = ()  # services whose steps must all run before these
    outcome: Callable[[Demo], Outcome] | None = None
    outcome_label: str | None = None  # the progress bar's label while the outcome is read


def key(*parts: str) -> str:
    """An Idempotency-Key: visible ASCII, one word (`Det. 12 (2024)` -> `Det.-12-2024`)."""
    words = [re.sub(r"[^A-Za-z0-9._:-]+", "-", part).strip("-") for part in parts]
    return "/".join((KEY_PREFIX, *words))


def contributions(specs: Iterable[Any] | None = None) -> dict[str, Contribution]:
    """service -> its contribution, of the available services (or `specs`), in `order`."""
    from shared import services

    found: dict[str, Contribution] = {}
    for spec in services.available() if specs is None else specs:
        contribution = services.demo_of(spec)
        if contribution is None:
            continue
        if not isinstance(contribution, Contribution):
            raise DemoError(f"{spec.demo}.contribution is not a shared.demo.Contribution")
        found[spec.name] = contribution
    return order(found)


def order(found: Mapping[str, Contribution]) -> dict[str, Contribution]:
    """The contributions in the order their steps run: each after the services it names in
    `after` (those among `found`), otherwise in the order given (the registry's)."""
    ordered: dict[str, Contribution] = {}
    while len(ordered) < len(found):
        ready = [
            name
            for name, c in found.items()
            if name not in ordered and all(n in ordered for n in c.after if n in found)
        ]
        if not ready:
            waiting = ", ".join(name for name in found if name not in ordered)
            raise DemoError(f"the demo steps of {waiting} wait for each other")
        ordered[ready[0]] = found[ready[0]]
    return ordered


def script(today: dt.date, found: Mapping[str, Contribution]) -> list[Step]:
    """Every step of the demo, in order, for a run on `today` (a Bologna day)."""
    return [step for contribution in found.values() for step in contribution.steps(today)]


# -- running it -----------------------------------------------------------------------------------


@dataclasses.dataclass
class DemoResult:
    """What the demo ends with: each service's outcome, and the work it took."""

    outcomes: list[Outcome]
    commands: int  # commands sent (repeated ones included)
    seconds: float

    @property
    def problems(self) -> list[str]:
        return [outcome.problem for outcome in self.outcomes if outcome.problem]

    def to_json(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for outcome in self.outcomes:
            merged.update(outcome.json)
        return {**merged, "commands": self.commands, "seconds": round(self.seconds, 2)}

    def shown(self) -> list[Any]:
        """What is printed: each outcome's lines and tables, then one line with the verdicts and
        the work it took."""
        verdicts = [outcome.verdict for outcome in self.outcomes if outcome.verdict]
        work = f"{self.commands} commands sent in {self.seconds:.1f}s"
        return [item for outcome in self.outcomes for item in outcome.show] + [
            ", ".join([*verdicts, work])
        ]


class Demo:
    """Runs the services' steps against the running services, one Api per service."""

    def __init__(
        self,
        apis: Mapping[str, Api],
        found: Mapping[str, Contribution] | None = None,
        *,
        timeout: float = 60.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.apis = dict(apis)
        self.found = dict(found or {})
        self.timeout = timeout
        self.now = clock
        self.names: dict[str, str] = {}  # members of earlier answers, for later paths
        self.notes: dict[str, list[Any]] = {}  # what steps wrote down for later steps

    @property
    def commands(self) -> int:
        return sum(api.sent for api in self.apis.values())

    def api(self, service: str) -> Api:
        if service not in self.apis:
            raise DemoError(f"the demo has no connection to {service}")
        return self.apis[service]

    def today(self) -> dt.date:
        return self.now().astimezone(ROME).date()

    def steps(self) -> int:
        """How many steps a run reports: its steps, and each outcome read under a label."""
        labelled = sum(c.outcome is not None and c.outcome_label is not None
                       for c in self.found.values())  # fmt: skip
        return len(script(self.today(), self.found)) + labelled

    def preflight(self) -> None:
        """Every service answers and passes its health checks (DemoError otherwise)."""
        from shared.observability import fetch_health

        for name, api in self.apis.items():
            state, health = fetch_health(api.base.removeprefix("http://"), timeout=5.0)
            if state == "down":
                raise DemoError(f"{name} does not answer at {api.base}: {RUN_HINT}")
            if state == "failing" and "checks" in health:
                failing = [k for k, check in health["checks"].items() if not check["ok"]]
                raise DemoError(
                    f"{name} at {api.base} is failing its health check ({', '.join(failing)}): "
                    "see `lavoro status`"
                )

    def run(self, progress: Callable[[str], None] = lambda label: None) -> DemoResult:
        started = time.monotonic()
        for step in script(self.today(), self.found):
            progress(step.label)
            self.do(step)
        outcomes = []
        for contribution in self.found.values():
            if contribution.outcome is None:
                continue
            if contribution.outcome_label is not None:
                progress(contribution.outcome_label)
            outcomes.append(contribution.outcome(self))
        return DemoResult(outcomes, self.commands, time.monotonic() - started)

    # -- what steps use -----------------------------------------------------------------------

    def do(self, step: Step) -> None:
        step.run(self)

    def command(self, step: Command) -> None:
        api = self.api(step.service)
        path = self.fill(step.path)
        status, answer = api.post(path, step.body, step.key, allow=(409,) if step.check else ())
        if status == 409:
            assert step.check is not None
            if not self.already_there(api, step.check):
                raise DemoError(
                    f"{step.service}: POST {path} answered 409 ({answer.get('message')}), and "
                    "what is there differs from the demo's: is this a database with other books?"
                )
            return
        for name, member in step.remember.items():
            if member not in answer:
                raise DemoError(f"{step.service}: POST {path} answered without {member}")
            self.names[name] = answer[member]

    def already_there(self, api: Api, check: Check) -> bool:
        found = api.get(self.fill(check.path))
        if check.within is not None:
            items = [
                item
                for item in found.get(check.within, [])
                if all(same(item.get(k), v) for k, v in check.match.items())
            ]
            if not items:
                return False
            found = items[0]
        return all(same(found.get(k), v) for k, v in check.same.items())

    def fill(self, path: str) -> str:
        try:
            return path.format_map(self.names)
        except KeyError as exc:  # a step whose answer was not kept: a bug in the script
            raise DemoError(f"the demo does not know {exc.args[0]} yet for {path}") from exc

    def note(self, name: str, value: Any) -> None:
        """Write `value` down under `name` for a later step (`noted(name)`)."""
        self.notes.setdefault(name, []).append(value)

    def noted(self, name: str) -> list[Any]:
        return list(self.notes.get(name, []))

    def wait(self, what: str, ready: Callable[[], Any]) -> Any:
        """Poll `ready` until it returns something truthy; DemoError after the timeout."""
        deadline = time.monotonic() + self.timeout
        while True:
            found = ready()
            if found:
                return found
            if time.monotonic() > deadline:
                raise DemoError(
                    f"timed out after {self.timeout:g}s waiting for {what}: see `lavoro status` "
                    "(is the broker up, is a dead letter parked?)"
                )
            time.sleep(POLL_INTERVAL)


def same(found: Any, wanted: Any) -> bool:
    """Whether an answer's member is what was sent (amounts compared as numbers; a tuple: any of
    its values)."""
    if isinstance(wanted, tuple):
        return any(same(found, one) for one in wanted)
    try:
        return Decimal(str(found)) == Decimal(str(wanted))
    except InvalidOperation:
        return str(found) == str(wanted)


def connect(*, token: str | None = None, timeout: float = 60.0) -> Demo:
    """The demo against the services that contribute to it, where the registry and
    configuration point, once each answers (DemoError otherwise, before anything is sent)."""
    from shared.client import default_token, service_address

    found = contributions()
    if not found:
        raise DemoError("no registered service contributes to the demo (see shared/services.py)")
    token = token or default_token("operator")
    apis = {name: Api(name, service_address(name), token) for name in found}
    ready = Demo(apis, found, timeout=timeout)
    ready.preflight()
    return ready


def euros(value: Any) -> str:
    """An amount as people read it: `1234567.5` -> `1,234,567.50`."""
    return f"{Decimal(str(value)):,.2f}"
