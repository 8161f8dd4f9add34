#!/usr/bin/env bash
# Regenerate the images' lock files from pyproject.toml: every package pinned, with the sha256 of
# every file PyPI serves for that version (so any platform's wheel verifies), for Python 3.11 (the
# images' interpreter). The Dockerfile installs them with `pip install --require-hashes`.
#
#   requirements/lock.sh                      keep current pins where they still fit pyproject.toml
#   requirements/lock.sh --upgrade            newest versions allowed by pyproject.toml
#   requirements/lock.sh --upgrade-package X  bump one package
#
# Files written:
#   requirements/runtime.lock   run pods: fx_ef's one dependency (cryptography) and its own
#   requirements/operator.lock  the operator and fxctl: the project's dependencies + the operator extra
#   requirements/build.lock     the build backend (setuptools), to build the project's wheel
#
# tests/unit/test_image_locks.py checks the result against pyproject.toml and the Dockerfile.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

UV_VERSION=0.13.9
PYTHON_VERSION=3.11
INDEX=https://pypi.org/simple

uv_bin() {
    if command -v uv >/dev/null && [[ "$(uv --version)" == "uv $UV_VERSION"* ]]; then
        command -v uv
        return
    fi
    local venv=.venv-lock
    if [[ ! -x "$venv/bin/uv" ]] || [[ "$("$venv/bin/uv" --version)" != "uv $UV_VERSION"* ]]; then
        python3 -m venv "$venv" >&2
        "$venv/bin/python" -m pip install -q --index-url "$INDEX" "uv==$UV_VERSION" >&2
    fi
    echo "$venv/bin/uv"
}

# pyproject_requirements KEY: the requirement strings of one pyproject.toml list, one per line.
#   project.dependencies | build-system.requires | dependency:NAME (one base dependency by name)
pyproject_requirements() {
    python3 - "$1" <<'PY'
import re, sys, tomllib
with open("pyproject.toml", "rb") as f:
    data = tomllib.load(f)
key = sys.argv[1]
if key == "build-system.requires":
    reqs = data["build-system"]["requires"]
elif key.startswith("dependency:"):
    name = key.split(":", 1)[1]
    reqs = [r for r in data["project"]["dependencies"]
            if re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower() == name]
    if not reqs:
        sys.exit(f"pyproject.toml has no dependency {name!r}")
else:
    sys.exit(f"unknown key {key!r}")
print("\n".join(reqs))
PY
}

UV=$(uv_bin)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
COMMON=(--no-config --index-url "$INDEX" --generate-hashes --universal
        --python-version "$PYTHON_VERSION" --custom-compile-command "requirements/lock.sh" "$@")

# The run pods' image: fx_ef imports nothing outside the standard library but cryptography.
pyproject_requirements dependency:cryptography > "$TMP/runtime.in"
"$UV" pip compile "${COMMON[@]}" "$TMP/runtime.in" -o requirements/runtime.lock

"$UV" pip compile "${COMMON[@]}" pyproject.toml --extra operator -o requirements/operator.lock

pyproject_requirements build-system.requires > "$TMP/build.in"
"$UV" pip compile "${COMMON[@]}" "$TMP/build.in" -o requirements/build.lock

# Temporary input paths say nothing to a reader; name what they were made from instead.
sed -i "s|# via -r $TMP/runtime.in|# via pyproject.toml (project.dependencies)|; \
        s|# via -r $TMP/build.in|# via pyproject.toml (build-system.requires)|" \
    requirements/runtime.lock requirements/build.lock
echo "wrote requirements/{runtime,operator,build}.lock" >&2
