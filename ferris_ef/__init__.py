"""Compatibility alias for scripts written against ``ferris_ef``: the same objects as ``fx_ef``.

``from ferris_ef import get_secret, get_param, context`` works unchanged and reads the same run
(``get_secret(name)`` is ``context.secrets.get(name)``, ``get_param(name)`` is
``context.params.get(name)``).

Older scripts also read ``json.loads(sys.argv[1])``, a JSON object holding the run's params and
``"secrets"``. The executor passes that argument only to a package that opts in with
``compat: ferris``: a process's arguments are visible to every other process on the machine
(``ps``, ``/proc/<pid>/cmdline``), so handing secrets over argv is never the default. New code
should use ``context.secrets.get`` instead.
"""

from fx_ef import context, get_param, get_secret

__all__ = ["context", "get_param", "get_secret"]
