"""The image tier: the images ``.ci/images`` built, run the way a pod runs them.

Without podman, or without the images, these tests are skipped with the reason; in CI they fail.
"""

from __future__ import annotations

import os

import pytest
from support.podman import OPERATOR_IMAGE, RUNTIME_IMAGE, Podman, PodmanNotFoundError


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"the image tests need this in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def podman() -> Podman:
    try:
        return Podman.find()
    except PodmanNotFoundError as exc:
        _unavailable(str(exc))
        raise


def _image(podman: Podman, image: str) -> str:
    if not podman.image_exists(image):
        _unavailable(f"{image} is not built: run .ci/images")
    return image


@pytest.fixture(scope="session")
def runtime_image(podman: Podman) -> str:
    return _image(podman, RUNTIME_IMAGE)


@pytest.fixture(scope="session")
def operator_image(podman: Podman) -> str:
    return _image(podman, OPERATOR_IMAGE)
