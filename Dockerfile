# syntax=docker/dockerfile:1
# Two images from one file:
#
#   docker build --target runtime  -t ghcr.io/fx-dev/fx-runtime:TAG .   run pods: init step, executor, fx_ef
#   docker build --target operator -t ghcr.io/fx-dev/fx-operator:TAG .  the operator and fxctl
#
# Every third-party package comes from a lock file with the sha256 of each file (requirements/*.lock,
# refreshed with requirements/lock.sh) and is installed with --require-hashes. The run pods' image
# holds cryptography and the standard library only: neither kopf nor the kubernetes client.
# Both final images run as the non-root user 10001 (the uid run pods are given) with tini as the
# entrypoint, so SIGTERM reaches Python and orphans are reaped (a pod keeps it by setting `args`,
# not `command`); Python's output is unbuffered.
# tests/unit/test_image_locks.py checks these promises against this file and the locks.

ARG PYTHON=python:3.11-slim-bookworm
# Debian bookworm's tini (apt-cache policy tini)
ARG TINI_VERSION=0.19.0-1+b3

# --- build: one virtualenv per image, filled from the locks; nothing of this stage ships but them ---
FROM ${PYTHON} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY requirements/ requirements/
# The build backend, locked like the rest, in a virtualenv of its own that does not ship.
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes -r requirements/build.lock
# The virtualenvs that ship have no pip; the build venv's pip installs into them (--python).
RUN python -m venv --without-pip /opt/fx/runtime \
 && /opt/build/bin/pip --python /opt/fx/runtime/bin/python install --only-binary=:all: \
        --require-hashes -r requirements/runtime.lock \
 && python -m venv --without-pip /opt/fx/operator \
 && /opt/build/bin/pip --python /opt/fx/operator/bin/python install --only-binary=:all: \
        --require-hashes -r requirements/operator.lock
COPY pyproject.toml README.md ./
COPY fx_ef fx_ef
COPY ferris_ef ferris_ef
COPY operator operator
# The operator image: the project's wheel over its locked dependencies, which must be complete.
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
 && /opt/build/bin/pip --python /opt/fx/operator/bin/python install --no-deps --no-index \
        /wheels/fx_executor-*.whl \
 && /opt/build/bin/pip --python /opt/fx/operator/bin/python check
# The run pods' image: only the runtime packages (fx_ef, ferris_ef), byte-compiled here because
# run pods have a read-only root filesystem.
RUN site=$(/opt/fx/runtime/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \
 && cp -r fx_ef ferris_ef "$site"/ \
 && find "$site" -name __pycache__ -prune -exec rm -rf {} + \
 && /opt/fx/runtime/bin/python -m compileall -q "$site" \
 && /opt/fx/runtime/bin/python -c 'import fx_ef.init, fx_ef.executor, ferris_ef' \
 && ! /opt/fx/runtime/bin/python -c 'import kopf' 2>/dev/null \
 && ! /opt/fx/runtime/bin/python -c 'import kubernetes' 2>/dev/null

# --- base: what both final images share ---
FROM ${PYTHON} AS base
ARG TINI_VERSION
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# No pip and no wheels to bootstrap one in the final images: they install nothing at run time (the
# official image ships pip in /usr/local, Debian's python3-venv keeps its wheels for ensurepip).
RUN apt-get update \
 && apt-get install -y --no-install-recommends "tini=${TINI_VERSION}" \
 && rm -rf /var/lib/apt/lists/* \
 && if python -m pip --version >/dev/null 2>&1; then \
        PIP_ROOT_USER_ACTION=ignore python -m pip uninstall -q -y pip setuptools wheel; fi \
 && rm -rf /usr/share/python-wheels \
        "$(python -c 'import ensurepip, os; print(os.path.dirname(ensurepip.__file__))')/_bundled" \
 && groupadd --gid 10001 fx \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin fx
# tini stays PID 1 as long as a pod sets `args` (not `command`).
ENTRYPOINT ["/usr/bin/tini", "--"]

# --- runtime: the run pods (python -m fx_ef.init, python -m fx_ef.executor) ---
FROM base AS runtime
COPY --from=build /opt/fx/runtime /opt/fx/runtime
ENV VIRTUAL_ENV=/opt/fx/runtime PATH=/opt/fx/runtime/bin:$PATH
USER 10001:10001
CMD ["python", "-m", "fx_ef.executor", "--help"]

# --- operator: the operator and fxctl ---
FROM base AS operator
COPY --from=build /opt/fx/operator /opt/fx/operator
ENV VIRTUAL_ENV=/opt/fx/operator PATH=/opt/fx/operator/bin:$PATH
USER 10001:10001
# The broker (8443), the metrics (9090) and kopf's liveness endpoint (8080).
EXPOSE 8443 9090 8080
CMD ["fxctl", "operator"]
