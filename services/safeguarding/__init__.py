"""The safeguarding service (see its issue; not built yet)."""
