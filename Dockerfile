# The chat-worker image: `python -m orchestrator worker` against Temporal and the inference engine.
# Production installs the project without the `local` extra: no llama.cpp, no dev server, no test tools.
#
#   docker build -t chat-worker .          (docker-compose.yml builds it as the `worker` service)

# Pinned to a patch release and Debian release; bump deliberately (both stages use it).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: a virtualenv with the project and its runtime dependencies --------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# setuptools needs the readme (pyproject `readme`) and the three packages with their data files.
COPY pyproject.toml README.md ./
COPY characters ./characters
COPY workflows ./workflows
COPY orchestrator ./orchestrator
# Every runtime dependency ships manylinux wheels, so no compiler is needed even here.
RUN /opt/venv/bin/pip install --only-binary=:all: --no-binary=chat-worker . \
    && /opt/venv/bin/pip uninstall --yes pip

# --- runtime: the virtualenv only, run by an unprivileged user -----------------------------------------
FROM ${PYTHON_IMAGE}
COPY --from=build /opt/venv /opt/venv
RUN useradd --system --uid 10001 --user-group --create-home --shell /usr/sbin/nologin worker
# Private by default: without CHAT_WORKER_PAYLOAD_KEYS_FILE the worker refuses to store chat text unencrypted.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CHAT_WORKER_ALLOW_PLAINTEXT=0
USER worker
WORKDIR /home/worker

# Healthy = Temporal answers and lists this container's worker as a poller of `chat` and `chat-generate`.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-m", "orchestrator", "health"]

# The image is the CLI; its default command is the worker. `docker compose run worker chat --help` works.
ENTRYPOINT ["python", "-m", "orchestrator"]
CMD ["worker"]
