"""The programme's two metropolitan calls as `lavoro demo` records them (services/calls/demo.py):
their terms, their money, and their applicants in submission order.

The applicants, their projects, scores and co-design topics are invented; every amount is
plausible and inferred, not published. The awards the rankings make are the grants of the
ledger's seed (services/ledger/demo/, `CALLS`): tests/integration/test_demo.py ranks these
applications as the calls service does and holds the two equal.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

PROJECT_CUP = "F31D23000140007"  # the programme's project, whose books the ledger keeps
BUDGET_LINE = "labour_policies"
WINDOW_DAYS = 30  # a call's window: today and the 29 Bologna days after it


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
class Funding:
    """A call's money, and what the demo expects the ledger to answer to its awards."""

    reference: str  # the call's act; an award's reference is `<reference>/<position>`
    kind: str  # self_employment | social_innovation
    budget: str
    confirmed: int  # awards the ledger confirms
    suspended: int  # awards it finds no room for: suspended, their money back to the call
    advances: tuple[str, ...]  # requested on the first confirmed awards, in ranking order


@dataclasses.dataclass(frozen=True)
class DemoCall:
    funding: Funding
    title: str
    criteria: tuple[tuple[str, int, int], ...]  # (name, weight, max score)
    bonuses: Mapping[str, int]
    award_cap: str
    max_share: str
    tie_break: tuple[str, ...]
    applicants: tuple[Applicant, ...]

    @property
    def reference(self) -> str:
        return self.funding.reference

    def terms(self, opens_on: dt.date) -> dict[str, Any]:
        """The draft's body, open for `WINDOW_DAYS` (Bologna) days from `opens_on`."""
        return {
            "title": self.title,
            "reference": self.reference,
            "kind": self.funding.kind,
            "budget_line": BUDGET_LINE,
            "project_cup": PROJECT_CUP,
            "budget": self.funding.budget,
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


# The calls' money, as the ledger's seed has their awards and advances (services/ledger/demo/,
# `CALLS`; tests/integration/test_demo.py holds the two equal). The self-employment call's ten
# awards fit the labour-policies line; the social-innovation call's budget is set for ten awards
# of 8,000.00 where the line has room for nine, whichever reaches the ledger last is suspended.
AUTOIMP = Funding(
    "AVV-2024-AUTOIMP", "self_employment", "98000.00", confirmed=10, suspended=0,
    advances=("5000.00", "5000.00", "4900.00", "4750.00"),
)  # fmt: skip
INNSOC = Funding(
    "AVV-2024-INNSOC", "social_innovation", "80000.00", confirmed=9, suspended=1,
    advances=("4000.00", "3750.00"),
)  # fmt: skip
# Ranked (see tests/integration/test_demo.py): Marco Rinaldi, Elena Zanetti, Giulia Ferri, Paolo
# Cavina, Aisha Diallo, Ion Popescu, Davide Guidi, Federica Masi, Chiara Lodi, Andrea Tondelli
# (funded, ten awards in this order), then Luca Montanari, level on points with Andrea
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
