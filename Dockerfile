# syntax=docker/dockerfile:1
# One image for all seven services: the command picks one (`platformd intake`, ...) and
# `platformd migrate <service>` applies that service's migrations. Used by charts/
# (ghcr.io/example/platform-control-plane) and compose.yaml.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/platform
COPY pyproject.toml README.md ./
COPY libs ./libs
COPY contracts ./contracts
COPY services ./services
# A regular (not editable) install: the runtime stage gets the virtualenv alone, with its
# bytecode compiled here because the root filesystem is read-only at run time.
RUN /opt/platform/bin/pip install . && /opt/platform/bin/python -m compileall -q /opt/platform

FROM python:${PYTHON_VERSION}-slim
# git: git-publisher runs git (fetch, fast-import, push); openssh-client for ssh remotes.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# A fixed numeric user, so Kubernetes can check runAsNonRoot and fsGroup matches it.
# /var/lib/platform is where compose mounts the GitOps volumes; it belongs to that user so
# a fresh named volume does too.
RUN groupadd --system --gid 10001 platform \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/platform --create-home \
       --shell /usr/sbin/nologin platform \
    && mkdir -p /var/lib/platform && chown 10001:10001 /var/lib/platform
COPY --from=build /opt/platform /opt/platform
ENV PATH=/opt/platform/bin:/usr/local/bin:/usr/bin:/bin \
    HOME=/home/platform \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/platform
# No default service: say which one to run.
CMD ["platformd", "--help"]
