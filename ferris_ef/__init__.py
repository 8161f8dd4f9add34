"""Compatibility alias for scripts written against ``ferris_ef``."""
