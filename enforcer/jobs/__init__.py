"""Scheduled jobs: the runner (cron, advisory lock, job_runs) and each job: reconcile, fold,
consistency, retention."""
