"""The lavoro chassis: event log, relay, inbox, projections, edge and wiring shared by every service."""
