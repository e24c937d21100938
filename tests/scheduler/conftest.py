"""PostgreSQL for the scheduler's tests: the integration suite's fixtures (a throwaway server on
loopback, a fresh database per test; skipped with the reason where no server can run)."""

from tests.integration.conftest import pg_admin_url, pg_url

__all__ = ["pg_admin_url", "pg_url"]
