"""The image tier: the images ``.ci/images`` built, run the way a pod runs them.

Without podman, or without the images, these tests are skipped with the reason; in CI they fail.
"""

from __future__ import annotations

import pytest
from support.ci import unavailable
from support.podman import OPERATOR_IMAGE, RUNTIME_IMAGE, Podman, PodmanNotFoundError

TIER = "the image tier"


@pytest.fixture(scope="session")
def podman() -> Podman:
    try:
        return Podman.find()
    except PodmanNotFoundError as exc:
        unavailable(str(exc), TIER)


def _image(podman: Podman, image: str) -> str:
    if not podman.image_exists(image):
        unavailable(f"{image} is not built: run .ci/images", TIER)
    return image


@pytest.fixture(scope="session")
def runtime_image(podman: Podman) -> str:
    return _image(podman, RUNTIME_IMAGE)


@pytest.fixture(scope="session")
def operator_image(podman: Podman) -> str:
    return _image(podman, OPERATOR_IMAGE)
