"""eir-enforcer: one package per role (docs/architecture.md); the modules here are the
foundations every package uses: configuration, clock, logs, waiting for a service, listening,
URL queries."""
