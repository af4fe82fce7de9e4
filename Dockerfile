# syntax=docker/dockerfile:1
# fraudstream: one image for every process; the fraudctl sub-command picks the role.
#   docker build -t fraudstream:local .
#   docker run --rm -e KAFKA_BOOTSTRAP_SERVERS=kafka:9092 fraudstream:local topics create

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: resolve and install the package (with the trainer's extra) into a venv ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only what the build needs: metadata first, then the sources (see .dockerignore).
COPY pyproject.toml README.md ./
COPY services/ services/
RUN pip install --upgrade pip setuptools wheel \
    && pip install ".[train]"

# ---- runtime: slim base, the venv, a non-root user ----
FROM ${PYTHON_IMAGE} AS runtime
# libgomp1: OpenMP runtime that LightGBM (and scikit-learn) load at import.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 fraud \
    && useradd --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin fraud \
    && mkdir -p /app /app/models \
    && chown -R 10001:10001 /app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/app \
    MPLCONFIGDIR=/tmp/matplotlib \
    FRAUD_STATE_DIR=/tmp/fraudstream/state \
    FRAUD_CACHE_DIR=/tmp/fraudstream/cache
WORKDIR /app
# Numeric so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# Reserved for the Prometheus endpoint (FRAUD_METRICS_PORT) of the long-running services.
EXPOSE 9400
ENTRYPOINT ["fraudctl"]
CMD ["--help"]
