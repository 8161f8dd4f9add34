# syntax=docker/dockerfile:1
# Two images from one file:
#   --target runtime   the run pod: init step, executor and fx_ef (no kopf, no kubernetes client)
#   --target operator  the operator and fxctl
# Both run as a non-root user with Python's output unbuffered; tini forwards signals.

ARG PYTHON=python:3.11-slim-bookworm

FROM ${PYTHON} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fx_ef fx_ef
COPY ferris_ef ferris_ef
COPY operator operator
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && pip wheel --wheel-dir /wheels/runtime-deps "cryptography>=42" \
 && pip wheel --wheel-dir /wheels/operator-deps ".[operator]"

FROM ${PYTHON} AS base
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin fx
ENTRYPOINT ["/usr/bin/tini", "--"]

FROM base AS runtime
COPY --from=build /wheels /wheels
# fx_ef needs only cryptography (for the init step); the operator's dependencies stay out.
RUN pip install --no-cache-dir --no-index --find-links /wheels/runtime-deps cryptography \
 && pip install --no-cache-dir --no-deps /wheels/fx_executor-*.whl \
 && rm -rf /wheels
USER 10001:10001
CMD ["python", "-m", "fx_ef.executor"]

FROM base AS operator
COPY --from=build /wheels/operator-deps /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels fx-executor[operator] \
 && rm -rf /wheels
USER 10001:10001
CMD ["fxctl", "--help"]
