"""What every service's tests stand on: one HTTP client (http.py), a started service and the
broker-less container of the `service/` tier (service.py), and one harness on the real broker for
`integration/` (broker.py)."""
