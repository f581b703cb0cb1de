"""`lavoro demo`: the real programme, CUP F31D23000140007, driven through the services' public HTTP
APIs, ending on the ledger's four published figures; and the reading of those figures that
`lavoro ledger progress` shares.

The demo is a script built from data (`script()`): a list of steps, each an HTTP command with a
deterministic Idempotency-Key, or a wait on a read endpoint with a deadline. In order:

1. the ledger: the project (three budget lines), its admission to funding, and the documents
   the offices sign themselves, conventions and contracts with their payments
   (services/ledger/seed.py, `OFFICE_COMMITMENTS`);
2. calls: a self-employment call and a social-innovation call, drafted and published, with
   applications from persons (personal data, sealed by the calls service) and from third-sector
   bodies and informal groups; the calls closed early by the office, with a reason (below);
   applications found admissible or not, accompanied with co-design sessions, scored;
3. the rankings approved, one call after the other: each award goes to the ledger as
   `grant_awarded` and comes back confirmed (flow F1). The social-innovation call makes ten
   awards of 8,000.00 where the labour-policies line has room for nine: whichever of them reaches
   the ledger last is refused (`line_lacks_room`), suspended, and its money released to the call.
   The figures do not depend on which one: the ledger answers awards of different streams in
   parallel, so the demo waits for every answer and reads which awards were confirmed;
4. advances requested on the first confirmed awards of each call, paid by the ledger (flow F2);
5. the ledger's progress: programmed, admitted, legally binding and disbursed must be exactly
   4,000,000.00 / 4,000,000.00 / 4,000,000.00 / 605,305.62, or the demo exits 1.

Running it twice changes nothing: every command carries the same key each time (a service that
has seen a key answers what it did then and appends nothing), the services derive their ids from
those keys, and where the ledger answers 409 the demo compares the state it finds with what it
sent. The figures come from services/ledger/seed.py; the applicants, their projects, scores and
co-design topics below are invented, and every split and amount is plausible and inferred, not
published (see the seed's docstring): only the CUP, the programme and the four totals are real.

**Early closure.** A call takes applications only inside its window (Bologna days). The demo runs
on the real clock against a plain `lavoro run`: it drafts both calls with a window of
`WINDOW_DAYS` days from today, takes the applications, then closes each call before its window
ends, which the calls service allows with a reason ("chiusura anticipata", as Italian offices do
when the resources are exhausted). Its keys do not depend on the day, so a run on another day
replays the same commands; a close the service already made counts as done.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from services.ledger import seed

ROME = ZoneInfo("Europe/Rome")
KEY_PREFIX = "lavoro-demo/v1"
FIGURES = ("programmed", "admitted", "legally_binding", "disbursed")
POLL_INTERVAL = 0.2  # seconds between two looks at a read endpoint while waiting
WINDOW_DAYS = 30  # a call's window: today and the 29 Bologna days after it
CLOSE_REASON = "Demo: applications collected, closed early by the office"
CLOSED = ("closed", "evaluated", "ranking_approved")  # a call's states once it was closed
RUN_HINT = "start lavoro with `lavoro run`"


class DemoError(Exception):
    """Ends the demo (or `lavoro ledger progress`) with its message on one line."""


# -- the programme's calls, as data ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Applicant:
    """One application, in submission order. `scores` None: found inadmissible for `rejected`."""

    applicant: Mapping[str, Any]  # the `applicant` member the calls API takes
    project_title: str
    eligible_cost: str
    requested: str
    jobs_created: int
    scores: Mapping[str, int] | None
    rejected: str | None = None
    sessions: tuple[str, ...] = ()  # co-design topics; any: accompanied first


@dataclasses.dataclass(frozen=True)
class DemoCall:
    grants: seed.CallGrants  # what its awards and advances come to
    title: str
    criteria: tuple[tuple[str, int, int], ...]  # (name, weight, max score)
    bonuses: Mapping[str, int]
    award_cap: str
    max_share: str
    tie_break: tuple[str, ...]
    applicants: tuple[Applicant, ...]

    @property
    def reference(self) -> str:
        return self.grants.reference

    def terms(self, opens_on: dt.date) -> dict[str, Any]:
        """The draft's body, open for `WINDOW_DAYS` (Bologna) days from `opens_on`."""
        return {
            "title": self.title,
            "reference": self.reference,
            "kind": self.grants.kind,
            "budget_line": "labour_policies",
            "project_cup": seed.CUP,
            "budget": f"{self.grants.budget:.2f}",
            "opens_on": opens_on.isoformat(),
            "closes_on": (opens_on + dt.timedelta(days=WINDOW_DAYS - 1)).isoformat(),
            "criteria": [{"name": n, "weight": w, "max_score": m} for n, w, m in self.criteria],
            "bonuses": dict(self.bonuses),
            "award_cap": self.award_cap,
            "max_share": self.max_share,
            "tie_break": list(self.tie_break),
        }


def _person(name: str, tax_code: str, *priorities: str) -> dict[str, Any]:
    email = name.lower().replace(" ", ".") + "@example.org"
    return {
        "kind": "person",
        "person": {"name": name, "tax_code": tax_code, "email": email, "priorities": priorities},
    }


def _body(name: str, tax_code: str, *priorities: str) -> dict[str, Any]:
    organisation = {"name": name, "tax_code": tax_code, "legal_seat": "Bologna"}
    return {"kind": "third_sector_body", "organisation": {**organisation, "priorities": priorities}}


def _group(name: str, person: str, tax_code: str, *priorities: str) -> dict[str, Any]:
    """An informal group without a tax code of its own: its reference person answers for it."""
    organisation = {"name": name, "priorities": priorities}
    reference_person = {"name": person, "tax_code": tax_code}
    return {"kind": "informal_group", "organisation": organisation, "person": reference_person}


def _se(bp: int, mk: int, em: int) -> dict[str, int]:
    return {"business_plan": bp, "market": mk, "employment": em}


def _si(si: int, pa: int, su: int) -> dict[str, int]:
    return {"social_impact": si, "partnership": pa, "sustainability": su}


AUTOIMP, INNSOC = seed.CALLS
# Ranked (see tests/integration/test_demo.py): Marco Rinaldi, Elena Zanetti, Giulia Ferri, Paolo
# Cavina, Aisha Diallo, Ion Popescu, Davide Guidi, Federica Masi, Chiara Lodi, Andrea Tondelli
# (funded, AUTOIMP.awards in this order), then Luca Montanari, level on points with Andrea
# Tondelli and behind him on the tie-break: nothing left of the budget for him.
SELF_EMPLOYMENT = DemoCall(
    AUTOIMP,
    "Avviso metropolitano per l'autoimpiego e l'avvio d'impresa",
    (("business_plan", 40, 10), ("market", 30, 10), ("employment", 30, 5)),
    {"women": 3, "recently_dismissed": 3, "under_35": 2, "peripheral_area": 2},
    "10000.00",
    "0.80",
    ("business_plan",),
    (
        Applicant(_person("Giulia Ferri", "FRRGLI96E52A944K", "women", "under_35"),
                  "Laboratorio di sartoria sostenibile", "12250.00", "10000.00", 1, _se(8, 7, 4),
                  sessions=("business plan review", "pricing and first customers")),
        Applicant(_person("Marco Rinaldi", "RNLMRC71C14A944P", "recently_dismissed"),
                  "Officina di riparazione biciclette", "14500.00", "10000.00", 2, _se(9, 8, 5),
                  sessions=("business plan review",)),
        Applicant(_person("Aisha Diallo", "DLLSHA90T45Z343Q", "women", "peripheral_area"),
                  "Servizio di mediazione linguistica", "11500.00", "9200.00", 1, _se(7, 7, 4),
                  sessions=("market analysis", "microcredit application")),
        Applicant(_person("Luca Montanari", "MNTLCU84B09A944W"),
                  "Studio di fotografia", "11800.00", "9000.00", 1, _se(5, 5, 3)),
        Applicant(_person("Elena Zanetti", "ZNTLNE79H63A944D", "women"),
                  "Consulenza contabile per microimprese", "20000.00", "15000.00", 2, _se(9, 7, 4),
                  sessions=("business plan review",)),
        Applicant(_person("Davide Guidi", "GDUDVD98L21A944N", "under_35", "peripheral_area"),
                  "Food truck di cucina bolognese", "12400.00", "9700.00", 1, _se(7, 6, 3)),
        Applicant(_person("Sara Benassi", "BNSSRA88D58A944U", "women"),
                  "Agenzia di eventi", "10000.00", "8000.00", 1, None, rejected="incomplete"),
        Applicant(_person("Paolo Cavina", "CVNPLA66S03A944M", "recently_dismissed",
                          "peripheral_area"),
                  "Manutenzione del verde", "13000.00", "9500.00", 2, _se(8, 6, 4),
                  sessions=("financing and microcredit",)),
        Applicant(_person("Chiara Lodi", "LDOCHR97A67A944R", "women", "under_35"),
                  "Piattaforma di ripetizioni online", "12500.00", "9800.00", 1, _se(6, 6, 2)),
        Applicant(_person("Ion Popescu", "PPSNIO85P12Z129F", "peripheral_area"),
                  "Impresa edile di ristrutturazioni", "16000.00", "10000.00", 3, _se(8, 7, 3),
                  sessions=("business plan review", "safety on site")),
        Applicant(_person("Federica Masi", "MSAFDR75R49A944B", "women", "recently_dismissed"),
                  "Negozio di prodotti sfusi", "18000.00", "12000.00", 1, _se(6, 5, 3)),
        Applicant(_person("Andrea Tondelli", "TNDNDR99M15A944H", "under_35"),
                  "Sviluppo di app per il turismo", "12500.00", "10000.00", 1, _se(6, 5, 2)),
    ),
)  # fmt: skip
SOCIAL_INNOVATION = DemoCall(
    INNSOC,
    "Avviso metropolitano per progetti di innovazione sociale",
    (("social_impact", 40, 10), ("partnership", 30, 10), ("sustainability", 30, 10)),
    {"peripheral_area": 3, "migrants": 2, "women": 2},
    "8000.00",
    "0.80",
    ("social_impact",),
    (
        Applicant(_body("Cooperativa sociale Il Ponte", "91004560371", "peripheral_area"),
                  "Portierato di quartiere al Pilastro", "12000.00", "8000.00", 2, _si(9, 8, 7),
                  sessions=("partnership mapping", "impact indicators")),
        Applicant(_body("APS Quartiere Bene Comune", "91011230375", "migrants"),
                  "Sportello di orientamento al lavoro per nuovi cittadini", "10500.00",
                  "8000.00", 1, _si(8, 8, 8)),
        Applicant(_group("Orti di via Erbosa", "Teresa Lambertini", "LMBTRS62A41A944S",
                         "peripheral_area"),
                  "Orti condivisi e inserimento lavorativo", "10000.00", "8000.00", 1,
                  _si(8, 7, 6), sessions=("partnership mapping",)),
        Applicant(_body("Fondazione Lavoro Insieme", "91022340378"),
                  "Tutor per il reinserimento degli over 50", "15000.00", "8000.00", 2,
                  _si(7, 8, 7)),
        Applicant(_body("ODV Rete Solidale Navile", "91033450370", "peripheral_area"),
                  "Emporio solidale con tirocini", "11000.00", "8000.00", 1, _si(7, 6, 6)),
        Applicant(_body("Cooperativa sociale Tessiture di comunità", "91044560372", "women"),
                  "Laboratorio tessile per donne in uscita dalla violenza", "13000.00",
                  "8000.00", 2, _si(9, 7, 6), sessions=("impact indicators",)),
        Applicant(_body("APS Ciclofficina Bolognina", "91055670374"),
                  "Ciclofficina e formazione di meccanici", "10000.00", "8000.00", 1,
                  _si(6, 7, 7)),
        Applicant(_body("Impresa sociale Cucine Aperte", "91066780376", "migrants"),
                  "Cucina di comunità e catering", "14000.00", "8000.00", 3, _si(7, 7, 8)),
        Applicant(_group("Genitori in rete", "Marta Cevenini", "CVNMRT80C50A944G", "women"),
                  "Servizio di custodia bambini per madri lavoratrici", "10000.00", "8000.00",
                  1, _si(8, 6, 5), sessions=("business model",)),
        Applicant(_body("Cooperativa sociale Verde Lavoro", "91077890378"),
                  "Manutenzione dei parchi con persone svantaggiate", "12500.00", "8000.00", 2,
                  _si(6, 6, 6)),
        Applicant(_body("Associazione Fuori Tempo", "91088900370"),
                  "Rassegna musicale", "9000.00", "7000.00", 0, None,
                  rejected="applicant_not_eligible"),
    ),
)  # fmt: skip
DEMO_CALLS = (SELF_EMPLOYMENT, SOCIAL_INNOVATION)


# -- the script's steps ---------------------------------------------------------------------------


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


@dataclasses.dataclass(frozen=True)
class AwaitAwards:
    """Wait until the ledger has answered every award of the call; so many must be confirmed
    and so many suspended."""

    label: str
    call: str
    confirmed: int
    suspended: int


@dataclasses.dataclass(frozen=True)
class Advance:
    """Request an advance on the `nth` confirmed award of the call, in ranking order."""

    label: str
    call: str
    nth: int
    amount: str
    claim_date: str


@dataclasses.dataclass(frozen=True)
class AwaitPaid:
    """Wait until the ledger has paid every tranche the demo requested."""

    label: str


Step = Command | AwaitAwards | Advance | AwaitPaid


def _key(*parts: str) -> str:
    """An Idempotency-Key: visible ASCII, one word (`Det. 12 (2024)` -> `Det.-12-2024`)."""
    words = [re.sub(r"[^A-Za-z0-9._:-]+", "-", part).strip("-") for part in parts]
    return "/".join((KEY_PREFIX, *words))


def ledger_steps() -> list[Step]:
    """The project, its admission, the offices' documents and their payments."""
    steps: list[Step] = []
    commitments = {seed.commitment_path(c): c for c in seed.OFFICE_COMMITMENTS}
    for _method, path, body in seed.requests(seed.OFFICE_COMMITMENTS):
        if path == "/projects":
            label, key = "ledger: programme the project", _key("ledger", "project", seed.CUP)
            same = {k: body[k] for k in ("local_code", "title", "start_date", "plan_reference")}
            check = Check(f"/projects/{seed.CUP}", same)
        elif path.endswith("/admissions"):
            label = "ledger: admit it to funding"
            key = _key("ledger", "admission", body["act_reference"])
            check = Check(
                path,
                {"adopted_on": body["adopted_on"]},
                "admissions",
                {"act_reference": body["act_reference"]},
            )
        elif path == "/commitments":
            reference = body["source_reference"]
            label, key = (
                f"ledger: {body['kind']} {reference}",
                _key("ledger", "commitment", reference),
            )
            commitment = next(c for c in commitments.values() if c.source_reference == reference)
            same = {k: body[k] for k in ("budget_line", "kind", "signed_on")}
            check = Check(
                seed.commitment_path(commitment), {**same, "original_amount": body["amount"]}
            )
        else:
            commitment = commitments[path.removesuffix("/payments")]
            claim = body["claim_reference"]
            label, key = f"ledger: pay {claim}", _key("ledger", "payment", claim)
            same = {k: body[k] for k in ("claim_date", "paid_on", "amount")}
            check = Check(
                seed.commitment_path(commitment), same, "payments", {"claim_reference": claim}
            )
        steps.append(Command(label, "ledger", path, body, key, check=check))
    return steps


def call_steps(call: DemoCall, window: dt.date) -> tuple[list[Step], list[Step]]:
    """(up to the applications; the early closure and the evaluation), for one call whose window
    opens on `window`."""
    ref = call.reference
    base = "/calls/{" + ref + "}"
    opened: list[Step] = [
        Command(f"calls: draft {ref}", "calls", "/calls", call.terms(window), _key("calls", ref, "draft"),
                remember={ref: "call_id"}),
        Command(f"calls: publish {ref}", "calls", base + "/publish", None, _key("calls", ref, "publish")),
    ]  # fmt: skip
    evaluated: list[Step] = [
        Command(f"calls: close {ref} early", "calls", base + "/close", {"reason": CLOSE_REASON},
                _key("calls", ref, "close"), check=Check(base, {"status": CLOSED}))
    ]  # fmt: skip
    for number, app in enumerate(call.applicants, start=1):
        name = f"{ref}#{number}"
        app_path = f"{base}/applications/{{{name}}}"
        body = {
            "applicant": app.applicant,
            "project_title": app.project_title,
            "business_plan": {
                "eligible_cost": app.eligible_cost,
                "requested_amount": app.requested,
                "jobs_created": app.jobs_created,
            },
        }
        who = f"{ref} application {number}"
        opened.append(
            Command(f"calls: {who} submitted", "calls", f"{base}/applications", body,
                    _key("calls", ref, "application", str(number)), remember={name: "application_id"})
        )  # fmt: skip
        if app.scores is None:
            reject = {"reason": app.rejected, "note": "found inadmissible by the office"}
            evaluated.append(
                Command(f"calls: {who} inadmissible", "calls", f"{app_path}/reject", reject,
                        _key("calls", ref, "reject", str(number)))
            )  # fmt: skip
            continue
        evaluated.append(
            Command(f"calls: {who} admitted", "calls", f"{app_path}/admit", None,
                    _key("calls", ref, "admit", str(number)))
        )  # fmt: skip
        if app.sessions:
            evaluated.append(
                Command(f"calls: {who} accompanied", "calls", f"{app_path}/accompaniment",
                        {"started_on": window.isoformat()}, _key("calls", ref, "accompany", str(number)))
            )  # fmt: skip
        for session, topic in enumerate(app.sessions, start=1):
            held = {"held_on": window.isoformat(), "topic": topic, "notes": None}
            evaluated.append(
                Command(f"calls: {who} co-design: {topic}", "calls",
                        f"{app_path}/codesign-sessions", held,
                        _key("calls", ref, "codesign", str(number), str(session)))
            )  # fmt: skip
        evaluated.append(
            Command(f"calls: {who} scored", "calls", f"{app_path}/scores",
                    {"scores": dict(app.scores)}, _key("calls", ref, "score", str(number)))
        )  # fmt: skip
    evaluated.append(
        Command(f"calls: {ref} evaluation completed", "calls", base + "/evaluation/complete",
                None, _key("calls", ref, "evaluation"))
    )  # fmt: skip
    return opened, evaluated


def script(window: dt.date, claim_date: dt.date) -> list[Step]:
    """Every step of the demo, in order. `window`: the day both calls' windows open (today);
    `claim_date`: the advances' claims (today for the ledger, which pays them)."""
    steps = ledger_steps()
    evaluations: list[Step] = []
    for call in DEMO_CALLS:
        opened, evaluated = call_steps(call, window)
        steps += opened
        evaluations += evaluated
    steps += evaluations
    for call in DEMO_CALLS:
        ref = call.reference
        steps.append(
            Command(f"calls: {ref} ranking approved, awards to the ledger", "calls",
                    "/calls/{" + ref + "}/ranking/approve", None, _key("calls", ref, "ranking"))
        )  # fmt: skip
        steps.append(
            AwaitAwards(f"ledger: answers to the awards of {ref}", ref,
                        len(call.grants.awards), len(call.grants.over_room))
        )  # fmt: skip
    for call in DEMO_CALLS:
        for nth, amount in enumerate(call.grants.advances):
            steps.append(
                Advance(f"calls: advance on award {nth + 1} of {call.reference}", call.reference,
                        nth, amount, claim_date.isoformat())
            )  # fmt: skip
    steps.append(AwaitPaid("ledger: pays the advances"))
    return steps


# -- talking to the services ----------------------------------------------------------------------


class Api:
    """JSON over HTTP to one service, with a bearer token; failures become DemoError lines."""

    def __init__(self, service: str, base: str, token: str, timeout: float = 10.0) -> None:
        import requests

        self.service = service
        self.base = base.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.session = requests.Session()
        self.sent = 0  # commands sent

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        import requests

        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        try:
            return self.session.request(
                method, self.base + path, headers=headers, timeout=self.timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise DemoError(
                f"{self.service} does not answer at {self.base} ({type(exc).__name__}): {RUN_HINT}"
            ) from exc

    def get(self, path: str, **params: Any) -> Any:
        response = self._send("GET", path, params=params)
        return self._answer("GET", path, response)

    def post(self, path: str, body: Any, key: str, *, allow: Iterable[int] = ()) -> tuple[int, Any]:
        self.sent += 1
        headers = {"Idempotency-Key": key}
        response = self._send("POST", path, json=body, headers=headers)
        if response.status_code in tuple(allow):
            return response.status_code, _json(response)
        return response.status_code, self._answer("POST", path, response)

    def _answer(self, method: str, path: str, response: Any) -> Any:
        if response.status_code < 300:
            return _json(response)
        body = _json(response) if "json" in response.headers.get("Content-Type", "") else {}
        message = body.get("message") or response.text[:200] or response.reason
        if response.status_code == 401:
            message += ": the token was refused (`lavoro run` writes var/operator.token)"
        raise DemoError(
            f"{self.service}: {method} {path} answered {response.status_code}: {message}"
        )


def _json(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return {}


def service_address(name: str) -> str:
    """`http://host:port` of a registered service, as its configuration gives it."""
    from shared import services
    from shared.observability import local_url
    from shared.runner import WEB_SERVER_KEY, service_settings

    return local_url(service_settings(services.get(name))[WEB_SERVER_KEY])


def default_token(*roles: str) -> str:
    """The development token `lavoro run` wrote under var/, of the first role that has one."""
    from shared.runner import dev_token_path, read_dev_token

    for role in roles:
        token = read_dev_token(role)
        if token:
            return token
    raise DemoError(
        f"no token: `lavoro run` writes {dev_token_path(roles[0])}; or give one with --token"
    )


# -- running the script ---------------------------------------------------------------------------


@dataclasses.dataclass
class DemoResult:
    """What the demo ends with: the ledger's progress, each call's outcome, the work it took."""

    progress: dict[str, Any]  # the ledger's GET /projects/<cup>/progress
    calls: list[dict[str, Any]]  # per call: reference, id, awards by status, available
    commands: int  # commands sent (repeated ones included)
    seconds: float

    @property
    def mismatches(self) -> dict[str, tuple[Decimal, Decimal]]:
        return mismatches(self.progress)

    def to_json(self) -> dict[str, Any]:
        return {
            "project_cup": self.progress["project_cup"],
            "total": self.progress["total"],
            "disbursed_percent": self.progress["disbursed_percent"],
            "budget_lines": self.progress["budget_lines"],
            "expected": {name: f"{seed.EXPECTED[name]:.2f}" for name in FIGURES},
            "matches": not self.mismatches,
            "calls": self.calls,
            "commands": self.commands,
            "seconds": round(self.seconds, 2),
        }


def mismatches(progress: Mapping[str, Any]) -> dict[str, tuple[Decimal, Decimal]]:
    """figure -> (the ledger's, the seed's) for each total that differs from the seed's."""
    found = {}
    for name in FIGURES:
        got = Decimal(str(progress["total"][name]))
        if got != seed.EXPECTED[name]:
            found[name] = (got, seed.EXPECTED[name])
    return found


class Demo:
    """Runs the script against the running services."""

    def __init__(
        self,
        ledger: Api,
        calls: Api,
        *,
        timeout: float = 60.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.apis = {"ledger": ledger, "calls": calls}
        self.timeout = timeout
        self.now = clock
        self.names: dict[str, str] = {}
        self.tranches: list[tuple[str, str]] = []  # (award id, tranche id)

    @property
    def commands(self) -> int:
        return sum(api.sent for api in self.apis.values())

    def preflight(self) -> None:
        """Both services answer and pass their health checks (DemoError otherwise)."""
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
        today = self.now().astimezone(ROME).date()
        for step in script(today, today):
            progress(step.label)
            self.do(step)
        progress("ledger: the four figures")
        answer = self.apis["ledger"].get(f"/projects/{seed.CUP}/progress")
        summary = [self.call_summary(call.reference) for call in DEMO_CALLS]
        return DemoResult(answer, summary, self.commands, time.monotonic() - started)

    # -- steps --------------------------------------------------------------------------------

    def do(self, step: Step) -> None:
        if isinstance(step, Command):
            self.command(step)
        elif isinstance(step, AwaitAwards):
            self.await_awards(step)
        elif isinstance(step, Advance):
            self.advance(step)
        else:
            self.await_paid(step)

    def command(self, step: Command) -> None:
        api = self.apis[step.service]
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
                if all(_same(item.get(k), v) for k, v in check.match.items())
            ]
            if not items:
                return False
            found = items[0]
        return all(_same(found.get(k), v) for k, v in check.same.items())

    def fill(self, path: str) -> str:
        try:
            return path.format_map(self.names)
        except KeyError as exc:  # a step whose answer was not kept: a bug in the script
            raise DemoError(f"the demo does not know {exc.args[0]} yet for {path}") from exc

    def awards(self, ref: str) -> list[dict[str, Any]]:
        found = self.apis["calls"].get("/awards", call_id=self.fill("{" + ref + "}"))["awards"]
        return sorted(found, key=lambda award: award["position"])

    def await_awards(self, step: AwaitAwards) -> None:
        awards = self.wait(
            f"the ledger's answers to the awards of {step.call}",
            lambda: (
                (found := self.awards(step.call))
                and all(a["status"] != "granted" for a in found)
                and found
            ),
        )
        confirmed = sum(a["status"] in ("confirmed", "closed") for a in awards)
        suspended = sum(a["status"] == "suspended" for a in awards)
        if (confirmed, suspended) != (step.confirmed, step.suspended):
            raise DemoError(
                f"{step.call}: {confirmed} award(s) confirmed and {suspended} suspended where the "
                f"demo expects {step.confirmed} and {step.suspended}: the labour_policies line "
                "had other room than the seed leaves (other books in this database?)"
            )

    def advance(self, step: Advance) -> None:
        confirmed = [a for a in self.awards(step.call) if a["status"] in ("confirmed", "closed")]
        if len(confirmed) <= step.nth:
            raise DemoError(f"{step.call}: no confirmed award number {step.nth + 1}")
        award = confirmed[step.nth]
        body = {
            "kind": "advance",
            "amount": step.amount,
            "claim_reference": f"{award['reference']}-ANT",
            "claim_date": step.claim_date,
        }
        key = _key("calls", "tranche", award["award_id"], "advance")
        path = f"/awards/{award['award_id']}/tranches"
        _status, answer = self.apis["calls"].post(path, body, key)
        self.tranches.append((award["award_id"], answer["tranche_id"]))

    def await_paid(self, step: AwaitPaid) -> None:
        def tranche_states() -> list[str]:
            states = []
            for award_id, tranche_id in self.tranches:
                award = self.apis["calls"].get(f"/awards/{award_id}")
                states += [t["status"] for t in award["tranches"] if t["tranche_id"] == tranche_id]
            return states

        states = self.wait(
            "the ledger's payment of the advances",
            lambda: (s := tranche_states()) and all(x != "requested" for x in s) and s,
        )
        if any(state != "paid" for state in states):
            raise DemoError(f"the ledger refused {states.count('rejected')} advance(s)")

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

    def call_summary(self, ref: str) -> dict[str, Any]:
        call = self.apis["calls"].get(self.fill("/calls/{" + ref + "}"))
        awards = self.awards(ref)
        by_status: dict[str, int] = {}
        for award in awards:
            by_status[award["status"]] = by_status.get(award["status"], 0) + 1
        return {
            "reference": ref,
            "call_id": call["call_id"],
            "kind": call["kind"],
            "status": call["status"],
            "applications": call["applications"],
            "budget": call["budget"],
            "available": call["available"],
            "awards": by_status,
            "paid": f"{sum(Decimal(a['paid']) for a in awards):.2f}",
        }


def _same(found: Any, wanted: Any) -> bool:
    if isinstance(wanted, tuple):
        return any(_same(found, one) for one in wanted)
    try:
        return Decimal(str(found)) == Decimal(str(wanted))
    except InvalidOperation:
        return str(found) == str(wanted)


def connect(*, token: str | None = None, timeout: float = 60.0) -> Demo:
    """The demo against the services the registry and configuration point at, once both answer
    (DemoError otherwise, before anything is sent)."""
    token = token or default_token("operator")
    ledger = Api("ledger", service_address("ledger"), token)
    calls = Api("calls", service_address("calls"), token)
    ready = Demo(ledger, calls, timeout=timeout)
    ready.preflight()
    return ready


# -- the ledger's progress (the demo's end, and `lavoro ledger progress`) ------------------------


def read_progress(
    *, token: str | None = None, cup: str = seed.CUP, as_of: dt.date | None = None
) -> dict[str, Any]:
    """GET /projects/<cup>/progress[?as_of=] from the running ledger."""
    token = token or default_token("auditor", "operator")
    api = Api("ledger", service_address("ledger"), token)
    params = {"as_of": as_of.isoformat()} if as_of else {}
    return dict(api.get(f"/projects/{cup}/progress", **params))


def euros(value: Any) -> str:
    return f"{Decimal(str(value)):,.2f}"


def progress_table(progress: Mapping[str, Any], title: str | None = None) -> Any:
    """The four amounts per budget line and in total, as a rich table."""
    from rich.table import Table

    as_of = f" as of {progress['as_of']}" if progress.get("as_of") else ""
    table = Table(title=title or f"CUP {progress['project_cup']}{as_of}")
    table.add_column("budget line")
    for name in FIGURES:
        table.add_column(name.replace("_", " "), justify="right")
    for line in progress["budget_lines"]:
        table.add_row(line["budget_line"], *(euros(line[name]) for name in FIGURES))
    total = progress["total"]
    table.add_row("total", *(euros(total[name]) for name in FIGURES), style="bold")
    return table


def describe(result: DemoResult) -> list[str]:
    """The lines printed under the table: the calls, and the verdict."""
    lines = []
    for call in result.calls:
        awards = ", ".join(f"{n} {status}" for status, n in sorted(call["awards"].items()))
        lines.append(
            f"{call['reference']} ({call['kind']}): {call['applications']} applications, "
            f"awards {awards}; budget {euros(call['budget'])}, available "
            f"{euros(call['available'])}; {euros(call['paid'])} paid in advances"
        )
    figures = " / ".join(euros(result.progress["total"][name]) for name in FIGURES)
    lines.append(
        f"programmed / admitted / legally binding / disbursed: {figures} "
        f"({result.progress['disbursed_percent']}% disbursed), {result.commands} commands sent "
        f"in {result.seconds:.1f}s"
    )
    return lines


def mismatch_line(found: Mapping[str, tuple[Decimal, Decimal]]) -> str:
    return "the ledger's figures differ from the seed's: " + ", ".join(
        f"{name} {euros(got)} (expected {euros(wanted)})" for name, (got, wanted) in found.items()
    )
