"""The REST transport (/api/v1)."""
