"""Flow factories (module-level, JSON-serialisable arguments: a conductor rebuilds them)."""
