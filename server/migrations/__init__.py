"""Alembic migrations of the event log's schema (``tickline.server.migrate`` runs them)."""
