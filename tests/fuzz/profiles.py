"""How long the fuzz targets run: a hypothesis profile picked by ``FX_FUZZ_PROFILE``.

``ci`` (the default, so a plain ``python -m pytest`` stays bounded): each target runs the number
of examples it asks for, well under a minute for all of them on two cores. ``long``: a hundred
times as many, for a local run of an hour or so. ``FX_FUZZ_EXAMPLES`` overrides the count for every
target. No profile writes a hypothesis database: nothing lands in the working tree, and a failure
is reproduced from the ``@reproduce_failure`` blob hypothesis prints (``print_blob``).
"""

from __future__ import annotations

import os
from typing import Final

from hypothesis import HealthCheck, Phase, settings

PROFILE_ENV: Final = "FX_FUZZ_PROFILE"
EXAMPLES_ENV: Final = "FX_FUZZ_EXAMPLES"
#: Examples per target relative to what the target asks for in CI.
SCALES: Final = {"ci": 1, "long": 100}

_COMMON = settings(
    deadline=None,  # a slow example on a loaded machine is not a failure; a hang hits the timeout
    database=None,
    print_blob=True,
    # No explain phase: it re-runs a failure hundreds of times (seconds) to comment the report.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    # Generated documents are large by design (deep nesting, long keys).
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.large_base_example],
)
for _name in SCALES:
    settings.register_profile(f"fx-fuzz-{_name}", parent=_COMMON)


def profile_name() -> str:
    """The selected profile; an unknown name is an error, not a silent default."""
    name = os.environ.get(PROFILE_ENV, "ci").strip() or "ci"
    if name not in SCALES:
        raise ValueError(f"{PROFILE_ENV}={name!r}: expected one of {', '.join(SCALES)}")
    return name


def fuzz_settings(examples: int) -> settings:
    """Settings for one target that asks for ``examples`` runs in CI."""
    override = os.environ.get(EXAMPLES_ENV, "").strip()
    count = int(override) if override else examples * SCALES[profile_name()]
    return settings(settings.get_profile(f"fx-fuzz-{profile_name()}"), max_examples=count)
