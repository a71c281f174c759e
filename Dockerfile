# Production image: gunicorn by default; the same image runs the prediction gateway
# (DJANGO_SETTINGS_MODULE=config.settings.gateway: predict, /healthz and /readyz only), the Celery
# workers, beat and migrations (see docker-compose.yml). Build: docker build -t model-governance .
FROM python:3.11-slim

# PYTHONPATH=/app: run the code from /app, not the copy pip puts in site-packages, because
# templates/ and static/ sit beside the packages (BASE_DIR) and are not part of the wheel.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    DJANGO_SETTINGS_MODULE=config.settings.prod \
    GOVERNANCE_VAR_DIR=/var/lib/governance \
    DJANGO_STATIC_ROOT=/app/staticfiles \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true

WORKDIR /app

# Dependencies first, in their own layer: rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
# (with the "s3" extra: boto3 for the audit checkpoints' object-lock store)
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['s3']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The project itself.
COPY . .
RUN pip install . \
    && rm -rf build *.egg-info \
    && python -m compileall -q /app

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/app \
        --shell /usr/sbin/nologin app \
    && mkdir -p /var/lib/governance /app/staticfiles \
    && chown app:app /var/lib/governance /app/staticfiles

USER app

# Static files are baked into the image (whitenoise serves them). The secrets exist only for this
# RUN: prod settings refuse to load without them. GOVERNANCE_VAR_DIR points at a scratch folder so
# nothing lands in the image's /var/lib/governance (the volume's mount point).
RUN DJANGO_SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(64))')" \
    AUDIT_HMAC_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(48))')" \
    GOVERNANCE_VAR_DIR=/tmp/build-var \
    python manage.py collectstatic --noinput \
    && rm -rf /tmp/build-var

EXPOSE 8000

# Liveness only (/readyz checks the database, broker and MLflow). It sends an allowed Host (the
# first of DJANGO_ALLOWED_HOSTS) and X-Forwarded-Proto so that SECURE_SSL_REDIRECT does not 301.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; h = os.environ.get('DJANGO_ALLOWED_HOSTS', 'localhost').split(',')[0].strip().lstrip('.'); h = 'localhost' if h in ('', '*') else h; r.urlopen(r.Request('http://127.0.0.1:8000/healthz', headers={'Host': h, 'X-Forwarded-Proto': 'https'}), timeout=4)"]

CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "2"]
