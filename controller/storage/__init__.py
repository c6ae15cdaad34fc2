"""Storage: one set of SQLAlchemy models, Alembic migrations, SQLite by default, PostgreSQL for scale-out."""
