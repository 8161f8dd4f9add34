"""How the run's step commands end."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


def exit_without_teardown(main: Callable[[], int]) -> None:
    """Run ``main`` and exit with its code, skipping the interpreter's module teardown: nothing of
    ours needs it, and on a short step it is a measurable part of the run's time."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
