"""The ledger service (see its issue; not built yet)."""
