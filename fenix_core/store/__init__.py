"""Persistence: the SQLAlchemy schema, opening the database, Alembic migrations."""
