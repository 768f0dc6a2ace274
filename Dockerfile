# syntax=docker/dockerfile:1
# One image for all seven services: the command picks one (`platformd intake`, ...) and
# `platformd migrate <service>` applies that service's migrations. Used by charts/
# (ghcr.io/example/platform-control-plane) and compose.yaml.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The dependencies exactly as locked (`make lock`): pinned versions, every file checked
# against its hash, nothing resolved. Their own layer, so a code change does not reinstall
# them. The locked pip and setuptools (build.txt) live in /opt/build, which stays in this
# stage: they install into /opt/platform from outside (--python) and build the project's
# wheel, so the image's virtualenv holds the runtime lock and the project, nothing else.
COPY requirements/runtime.txt requirements/build.txt ./requirements/
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --require-hashes -r requirements/build.txt \
    && python -m venv --without-pip /opt/platform \
    && /opt/build/bin/pip --python /opt/platform/bin/python install --require-hashes -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY libs ./libs
COPY contracts ./contracts
COPY services ./services
# A regular (not editable) install of the project alone (--no-deps: its dependencies are the
# lock's, above): the runtime stage gets the virtualenv alone, with its bytecode compiled
# here because the root filesystem is read-only at run time.
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/dist . \
    && /opt/build/bin/pip --python /opt/platform/bin/python install --no-deps /tmp/dist/*.whl \
    && /opt/platform/bin/python -m compileall -q /opt/platform

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
