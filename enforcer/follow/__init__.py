"""This process's state kept in step with what PostgreSQL stores: registry events laid
over a snapshot, cut-offs and clone flags taken in, newer generations adopted."""
