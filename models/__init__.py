"""Pydantic models and the HTTP contract shared by the services (no service imports)."""
