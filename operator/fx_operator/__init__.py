"""The FX executor operator: runs packages of Python scripts as Jobs and hands them secrets safely."""

__version__ = "0.1.0"
