"""The charters service (see its issue; not built yet)."""
