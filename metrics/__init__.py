"""Prometheus metrics of the worker, its jobs, notices and HTTP endpoints, and of `serve`."""

from prometheus_client import disable_created_metrics

# No `_created` series beside every counter and histogram: they double what is stored and
# no dashboard or alert reads them. Here, so that every process that counts anything (the
# worker, `serve`, a job's process) has it set before its first metric is made, whichever
# of this package's modules it imports first.
disable_created_metrics()
