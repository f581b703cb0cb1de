"""lavoro services: one package each, sharing only the chassis in `shared/`."""
