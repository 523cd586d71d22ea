# driftwire worker image: `docker build -t driftwire .` then `docker run driftwire --help`.
# The image talks to an existing Kafka; it does not need Java (that is only for the
# local test broker, `driftwire broker`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas/ schemas/
COPY detectors/ detectors/
COPY streams/ streams/
RUN pip install . \
    && useradd --create-home --uid 10001 driftwire \
    && rm -rf /src

USER driftwire
WORKDIR /home/driftwire
ENTRYPOINT ["driftwire"]
CMD ["--help"]
