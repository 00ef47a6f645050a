# ocicache's own image, built the way ocicache tells everyone to build: its Python dependencies come
# from an ocicache cache image, offline (`scripts/build-image.sh` locks, pushes that image, builds).
#
#   docker build --build-arg UV_CACHE_IMAGE=<registry>/ocicache/uvcache:<tag> -t ocicache .
#   docker run --rm -v "$PWD:/work" -w /work ocicache push uv.lock <registry>/uvcache/app:main
#
# Every FROM goes through an ARG so it works in Docker (classic and BuildKit), buildah and podman.
ARG UV_CACHE_IMAGE
ARG BASE_IMAGE=python:3.11-slim-bookworm
# Must be the uv the cache image was filled with (the pinned one in pyproject.toml).
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_CACHE_IMAGE} AS uvcache
FROM ${UV_IMAGE} AS uv

FROM ${BASE_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/opt/ocicache
WORKDIR /src
COPY pyproject.toml uv.lock ./
# No download: every wheel comes from the bind-mounted cache, which stays out of the image.
RUN --mount=type=bind,from=uvcache,target=/root/.cache/uv,rw \
    uv sync --frozen --offline --no-install-project --no-dev
# ocicache itself is pure Python: put its source on the venv's path instead of building a wheel
# (a build would need the build backend, which is not in the lock).
COPY ocicache /opt/ocicache/src/ocicache
RUN echo /opt/ocicache/src > "$(echo /opt/ocicache/lib/python3*/site-packages)/ocicache-src.pth" \
    && /opt/ocicache/bin/python -m ocicache --version

FROM ${BASE_IMAGE}
COPY --from=build /opt/ocicache /opt/ocicache
ENV PATH=/opt/ocicache/bin:$PATH
ENTRYPOINT ["/opt/ocicache/bin/python", "-m", "ocicache"]
CMD ["--help"]
