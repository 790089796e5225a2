# syntax=docker/dockerfile:1
# Every Switchyard image, from this one definition: COMPONENT names the workspace member it
# runs (switchyard-COMPONENT: edge, operator, adapter-vllm, adapter-sglang, adapter-tgi,
# enginesim). Build from the repository root, where the workspace lock lives:
#   docker build --build-arg COMPONENT=edge -t edge .
# skaffold.yaml builds each image this way.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# -- build: a self-contained virtualenv with the component and exactly its locked dependencies
FROM ${PYTHON_IMAGE} AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
ARG COMPONENT
# The third-party dependencies first, from the lock alone, so this layer is rebuilt when the
# lock changes, not on every source edit. --frozen: the members' pyproject.toml files are not
# mounted, so the lock cannot be checked against them yet (the next step checks it).
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-workspace --package "switchyard-${COMPONENT:?pass --build-arg COMPONENT}"
# Then the component and the libraries it uses, installed as wheels (not editable) so that the
# virtualenv needs nothing from /src. The context (.dockerignore keeps it to the workspace) is
# copied, not bind-mounted: skaffold watches what COPY names, not RUN mounts. uv reuses a
# wheel it built from a folder while the folder's pyproject.toml keeps its ctime
# (astral-sh/uv#11455), and this COPY renews every ctime: edited sources are rebuilt.
# The image's command is the component's console script, under the one name the runtime
# stage's ENTRYPOINT gives.
COPY . /src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --package "switchyard-${COMPONENT}" \
    && ln -s "switchyard-${COMPONENT}" "${UV_PROJECT_ENVIRONMENT}/bin/switchyard" \
    && test -x "${UV_PROJECT_ENVIRONMENT}/bin/switchyard"

# -- runtime: the same Python (the virtualenv links to it), the virtualenv, nothing else
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 switchyard \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin switchyard
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
ARG COMPONENT
LABEL org.opencontainers.image.title="switchyard-${COMPONENT}" \
      org.opencontainers.image.description="Switchyard: ${COMPONENT} (see the README's repository layout)"
USER 10001:10001
# Exec form: the console script's Python is PID 1 and receives SIGTERM itself (graceful
# shutdown). The operator gives simulated engines their own command (python -m ...).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/venv/bin/switchyard"]
