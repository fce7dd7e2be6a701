# perpwatch container image: `docker compose up -d` (compose.yaml) or
#   docker build -t perpwatch . && docker run -d --env-file .env -v perpwatch-data:/data perpwatch
#
# Two stages: the first builds a virtual environment (pip and wheels stay there), the second copies only
# the venv onto a clean base. Both start FROM the same image, so the venv's python (/usr/local/bin on the
# official image, /usr/bin on a Debian base) is where it was built. Wheels put in ./wheelhouse beforehand
# make the build need no network (docker/build-venv.sh).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY . .
RUN sh docker/build-venv.sh /opt/perpwatch /src

FROM ${PYTHON_IMAGE}
# A fixed numeric uid, so a volume's owner and a platform's runAsNonRoot check know it.
RUN groupadd --system --gid 10001 perpwatch \
 && useradd --system --uid 10001 --gid perpwatch --home-dir /data --no-create-home --shell /usr/sbin/nologin perpwatch \
 && mkdir -p /data \
 && chown perpwatch:perpwatch /data
COPY --from=build /opt/perpwatch /opt/perpwatch
ENV PATH=/opt/perpwatch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PERPWATCH_DATABASE_URL=sqlite:////data/perpwatch.db \
    PERPWATCH_HEARTBEAT_FILE=/tmp/perpwatch.heartbeat
# The SQLite database (and its WAL) lives here; with PostgreSQL it stays empty.
VOLUME /data
# Settings come from the environment (compose's env_file). Working in /data, a relative SQLite path (the
# sqlite:///data/perpwatch.db of .env.example) lands on the volume too, never in the container's own layer.
WORKDIR /data
USER 10001:10001
# `perpwatch run` stops on SIGTERM: the watchers close, sends in flight get a few seconds, then it exits 0,
# inside Docker's default 10 s grace period (compose.yaml gives 30 s).
STOPSIGNAL SIGTERM
# The bot's event loop rewrites the heartbeat file; no network, no listener needed (bot/health.py).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["perpwatch", "healthcheck"]
ENTRYPOINT ["perpwatch"]
CMD ["run"]
