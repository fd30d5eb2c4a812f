"""Prometheus metrics of the worker."""
