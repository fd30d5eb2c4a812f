"""The engine: pure functions and immutable state over a batch of events. No I/O; it
imports no shell package (PostgreSQL, Kafka, HTTP, the CLI): tests/test_architecture.py."""
