"""Kopf handlers: thin adapters from cluster events to services (one module per kind)."""
