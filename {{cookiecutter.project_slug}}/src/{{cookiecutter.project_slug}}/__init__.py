"""Async SQLAlchemy 2 + asyncpg data layer on PostgreSQL."""
