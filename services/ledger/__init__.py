"""The ledger: the programme's books (PN Metro Plus, CUP F31D23000140007), every euro traced to
its cause.

Pure: commands.py (what it is asked, ids and streams), state.py (what it knows), domain.py (the
rules and decisions), flows.py (its answers to calls, F1/F2), entries.py (the events it writes),
deadlines.py (rules of time), reports.py. Edges: schemas.py (event payloads, public and consumed
schemas), api.py (HTTP schemas). I/O: books.py (load, decide, append), readmodels.py and
queries.py (read models, now or as of a day), service.py (the nameko class). demo.py: the
published programme as plausible documents (the seed), the ledger's part of `lavoro demo`;
cli.py: `lavoro ledger ...`.
"""
