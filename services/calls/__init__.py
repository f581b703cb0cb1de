"""The calls service (see its issue; not built yet)."""
