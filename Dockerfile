# Keel decision service. Build: docker build -t keel .   Run: docker run -p 3000:3000 -v keel-state:/data keel
# The same file builds on python:3.11-slim-bookworm and on a bare Debian bookworm base
# (docker build --build-arg BASE=...), where Python comes from Debian instead; see scripts/container-check.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/keel/bin:$PATH \
    KEEL_HOME=/data \
    KEEL_SERVE_HOST=0.0.0.0 \
    KEEL_SERVE_PORT=3000 \
    BENTOML_HOME=/data/bentoml \
    BENTOML_DO_NOT_TRACK=True

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# libgomp1 is LightGBM's OpenMP runtime (the slim and bare Debian bases lack it). Debian's python3.11
# is installed only where the base has no Python. Versions are not pinned: the base image pins the
# Debian release and its security updates replace exact package versions.
# hadolint ignore=DL3008
RUN apt-get update \
    && packages=(libgomp1) \
    && if ! command -v python3.11 > /dev/null; then packages+=(python3.11 python3.11-venv); fi \
    && apt-get install -y --no-install-recommends "${packages[@]}" \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/keel \
    && useradd --create-home --uid 10001 keel \
    && mkdir -p /data \
    && chown keel:keel /data

WORKDIR /app
# Dependencies first, from the lock file with hashes, in their own layer: a source change reuses it.
# Behind a TLS-intercepting proxy, pass its CA certificates (PEM text) as EXTRA_CA_CERTS; they are
# trusted for this download only, never by the image.
ARG EXTRA_CA_CERTS=""
COPY requirements.lock ./
RUN if [ -n "$EXTRA_CA_CERTS" ]; then \
        { cat "$(python -c 'import pip._vendor.certifi as c; print(c.where())')"; \
          printf '%s\n' "$EXTRA_CA_CERTS"; } > /tmp/ca.pem \
        && export PIP_CERT=/tmp/ca.pem; \
    fi \
    && pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock \
    && rm -f /tmp/ca.pem

COPY pyproject.toml README.md ./
COPY keel ./keel
COPY feature_defs ./feature_defs
COPY models ./models
COPY training ./training
COPY serving ./serving
COPY monitoring ./monitoring
# Keel itself, against the locked set only (no dependency resolution, no build-time downloads).
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && pip check

# Run from the state volume: /app holds the source tree, whose keel/ would shadow the installed package
# for `python -c "import keel..."`, and relative paths such as `--data cases.csv` then mean /data.
WORKDIR /data
USER 10001:10001
VOLUME ["/data"]
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('KEEL_SERVE_PORT', '3000'), timeout=2)"]
# Models must be registered first: docker run ... keel keel train all (same volume or MLFLOW_TRACKING_URI).
CMD ["keel", "serve"]
