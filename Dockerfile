# syntax=docker/dockerfile:1
# fraudstream images: one per side, the fraudctl sub-command picks the process.
#
#   docker build -t fraudstream:local .                          # serving (the default)
#   docker build --target trainer -t fraudstream-trainer:local .
#
# serving: scorer, drift monitor, archiver, review service and the operator CLI, without
#   the `train` extra
#   (no scikit-learn or ONNX converters); CMD `scorer`.
# trainer: the same plus the `train` extra; CMD `trainer`.
# Both install exactly the versions and hashes in requirements/*.lock (`make lock`).
# Lint: `hadolint Dockerfile` (`make lint`). There is no Docker engine on the test
# machines; docker-compose.yml builds both targets.

# Pinned to a patch release; bump with the lock files.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- build: a venv with the locked dependencies and the package, per side ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY requirements/ requirements/
RUN pip install --require-hashes --no-deps --requirement requirements/serving.lock
COPY pyproject.toml README.md ./
COPY services/ services/
# --no-deps: every dependency came from the lock above; `pip check` proves none is missing.
RUN pip install --no-deps . && pip check

FROM build AS build-trainer
RUN pip install --require-hashes --no-deps --requirement requirements/train.lock \
    && pip check

# ---- runtime base: slim, libgomp, a non-root user, the config files ----
FROM ${PYTHON_IMAGE} AS runtime
# libgomp1: the OpenMP runtime LightGBM loads at import (bookworm's version; bump with
# the base image).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1=12.2.0-14+deb12u1 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 fraud \
    && useradd --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin fraud \
    && mkdir -p /app/models /app/archive /app/review \
    && chown -R 10001:10001 /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/app \
    MPLCONFIGDIR=/tmp/matplotlib \
    FRAUD_STATE_DIR=/tmp/fraudstream/state \
    FRAUD_CACHE_DIR=/tmp/fraudstream/cache \
    FRAUD_METRICS_HOST=0.0.0.0
WORKDIR /app
# Rule pack, feature set, drift and promotion policies: the settings' defaults are
# relative to /app (config/rules.yaml, ...); mount over /app/config to change them.
COPY --chown=10001:10001 config/ config/
# Numeric so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# /metrics, /healthz and /readyz of the long-running services (FRAUD_METRICS_PORT; the
# monitor's and trainer's own port settings are set to it in docker-compose.yml); the
# review console (FRAUD_REVIEW_PORT).
EXPOSE 9400 8480
ENTRYPOINT ["fraudctl"]

FROM runtime AS trainer
COPY --from=build-trainer /opt/venv /opt/venv
CMD ["trainer"]

# The default target (last): serving.
FROM runtime AS serving
COPY --from=build /opt/venv /opt/venv
CMD ["scorer"]
