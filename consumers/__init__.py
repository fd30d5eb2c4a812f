"""Kafka input loops: attach events and registry events in, batches out to the engine."""
