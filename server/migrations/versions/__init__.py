"""One migration of the event log's schema per module, applied in order by Alembic."""
