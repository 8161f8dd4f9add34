"""FX executor operator: runs packages of Python scripts as Jobs, handing them secrets safely."""

__version__ = "0.1.0"
