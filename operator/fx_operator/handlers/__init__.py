"""Kopf handlers: thin adapters from cluster events to services (filled by the operator issue)."""
