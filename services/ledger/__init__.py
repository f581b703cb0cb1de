"""The ledger: the programme's books (PN Metro Plus, CUP F31D23000140007), every euro traced to
its cause. The one service layout (docs/architecture.md, "Writing a service"):

Pure: commands.py (what it is asked, ids and streams), state.py (what it knows), domain/ (the
rules and decisions; entries.py the events it writes, answers.py its answers to calls, F1/F2,
deadlines.py the rules of time). Edges: events.py (event payloads, public and consumed schemas,
the contracts), api.py (HTTP schemas). I/O: handlers.py (the plans the unit of work runs),
readmodels.py, queries/ (read models now or as of a day, reports), service.py (the nameko class).
demo/: the published programme as plausible documents (its figures in seed.yaml).
"""
