"""The placement service (see its issue; not built yet)."""
