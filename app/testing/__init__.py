"""Test and benchmark helpers (throwaway PostgreSQL servers); not used by the running service."""
