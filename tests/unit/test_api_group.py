"""The operator's API names agree with the CRDs a platform team installs."""

from __future__ import annotations

from pathlib import Path

import yaml
from fx_operator.domain import api_group

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_every_crd_is_served_under_the_group_version_and_plural_the_code_uses() -> None:
    served = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        spec = crd["spec"]
        assert spec["group"] == api_group.GROUP, path.name
        assert api_group.VERSION in {v["name"] for v in spec["versions"] if v["served"]}
        served[spec["names"]["kind"]] = spec["names"]["plural"]
    assert served == api_group.PLURALS
