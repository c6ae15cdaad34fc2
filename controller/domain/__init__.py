"""Domain use cases: each runs in the caller's transaction."""
