# Keel decision service. Build: docker build -t keel .   Run: docker run -p 3000:3000 -v keel-state:/data keel
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KEEL_HOME=/data \
    KEEL_SERVE_HOST=0.0.0.0 \
    KEEL_SERVE_PORT=3000 \
    BENTOML_HOME=/data/bentoml \
    BENTOML_DO_NOT_TRACK=True

WORKDIR /app
COPY pyproject.toml README.md ./
COPY keel ./keel
COPY feature_defs ./feature_defs
COPY models ./models
COPY training ./training
COPY serving ./serving
COPY monitoring ./monitoring
# Same install as the README's `make run`, without the dev extras.
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 keel \
    && mkdir -p /data \
    && chown keel:keel /data

USER 10001:10001
VOLUME ["/data"]
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('KEEL_SERVE_PORT', '3000'), timeout=2)"]
# Models must be registered first (keel train all, against the same KEEL_HOME or MLFLOW_TRACKING_URI).
CMD ["keel", "serve"]
