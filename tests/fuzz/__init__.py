"""Fuzz targets: one per parser that reads a tenant's input (see docs/testing.md)."""
