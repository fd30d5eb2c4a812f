"""The worker's HTTP: /metrics, /healthz and /readyz, and the IMEI status query."""
