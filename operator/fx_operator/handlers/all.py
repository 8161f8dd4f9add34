"""Import this to register every handler with kopf (``kopf run -m fx_operator.handlers.all``)."""

from fx_operator.handlers import executions, lifecycle, packages, schedules, scoped_secrets

__all__ = ["executions", "lifecycle", "packages", "schedules", "scoped_secrets"]
