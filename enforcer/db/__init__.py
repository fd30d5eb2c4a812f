"""PostgreSQL: every SQL statement of the product, and the migrations."""
