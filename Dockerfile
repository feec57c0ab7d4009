# syntax=docker/dockerfile:1
# SIMtrix: one image for every process (web, worker, beat, migrations); docker-compose.yml runs it.
#   docker build -t simtrix .
# Stage 1 installs the dependencies into a virtualenv and collects the static files; stage 2 is
# the slim runtime with only that virtualenv, the code and the static files, run by a non-root user.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt /tmp/requirements.txt
RUN pip install --requirement /tmp/requirements.txt
WORKDIR /app
COPY . .
# Static files, hashed and compressed (whitenoise's manifest storage, simtrix/staticfiles.py).
# The settings need placeholders only: collectstatic connects to nothing.
RUN DJANGO_SECRET_KEY=collectstatic-only \
    DATABASE_URL=postgres://build.invalid/simtrix \
    REDIS_URL=redis://build.invalid:6379/0 \
    SIMTRIX_ENCRYPTION_KEY="$(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')" \
    python manage.py collectstatic --noinput \
    && test -f var/static/staticfiles.json \
    && python -m compileall -q /app


FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    DJANGO_DEBUG=0 \
    SIMTRIX_MEDIA_ROOT=/data/media
# A user of its own, without a shell login or a home to write to.
RUN groupadd --system --gid 10001 simtrix \
    && useradd --system --uid 10001 --gid simtrix --no-create-home --shell /usr/sbin/nologin simtrix \
    && mkdir -p /data/media /run/simtrix-metrics \
    && chown simtrix:simtrix /data/media /run/simtrix-metrics
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
WORKDIR /app
USER simtrix:simtrix
EXPOSE 8000
# /healthz: the process answers (docker-compose.yml checks /readyz too). Any Host works: the
# probes are answered before the host check (simtrix/probes.py).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; r = u.urlopen(u.Request('http://127.0.0.1:8000/healthz', headers={'Host': 'localhost'}), timeout=4); sys.exit(r.status != 200)"]
CMD ["gunicorn", "--config", "gunicorn.conf.py", "simtrix.wsgi:application"]
