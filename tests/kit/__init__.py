"""What every service's tests stand on: one HTTP client (http.py); a started service, what it
starts with and the `service/` tier's container without a broker (service.py); one harness on the
real broker for `integration/` (broker.py); a recorded event without a log (events.py)."""
