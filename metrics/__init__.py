"""Prometheus metrics of the worker, its jobs, notices and HTTP endpoints, and of `serve`."""
