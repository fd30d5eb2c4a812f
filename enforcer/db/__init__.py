"""PostgreSQL: migrations and the tables the worker writes."""
