# TrialBridge FHIR R4 server. Build: docker build -t trialbridge .  Run: docker run -p 8000:8000 trialbridge
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TRIALBRIDGE_FIXTURES_DIR=/srv/trialbridge/fixtures
COPY --from=build /install /usr/local
RUN useradd --create-home --uid 10001 trialbridge \
    && mkdir -p /srv/trialbridge/var \
    && chown -R trialbridge:trialbridge /srv/trialbridge
COPY --chown=trialbridge:trialbridge fixtures /srv/trialbridge/fixtures
WORKDIR /srv/trialbridge
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/fhir/metadata', timeout=4)"]
# DATABASE_URL=postgresql://user@host/db selects PostgreSQL; the default is SQLite under /srv/trialbridge/var.
CMD ["trialbridge", "serve", "--host", "0.0.0.0", "--port", "8000"]
