# One image per function: docker build --build-arg FUNCTION=order -t flashsale-order .
# The base is pinned by digest (python:3.11-slim, 3.11.16 on Debian trixie, as of 2026-08);
# bump it with `docker buildx imagetools inspect python:3.11-slim` or override it with
# `make images PYTHON_IMAGE=...`.
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${PYTHON_IMAGE} AS builder
ARG FUNCTION
RUN case "$FUNCTION" in \
      auth|stock|order|events) ;; \
      *) echo "build with --build-arg FUNCTION=auth|stock|order|events (got '$FUNCTION')" >&2; exit 1 ;; \
    esac
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt

FROM ${PYTHON_IMAGE}
ARG FUNCTION
RUN groupadd --gid 10001 flashsale \
 && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin flashsale
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY shared/ shared/
COPY functions/${FUNCTION}/ functions/${FUNCTION}/
# Compiled now because the root filesystem is read-only at run time: a cold start
# should not pay for compiling, and could not cache the result anyway.
RUN python -m compileall -q shared functions

ENV FUNCTION=${FUNCTION} \
    PORT=8080 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
USER 10001:10001
EXPOSE 8080
CMD ["python", "-m", "shared.serving"]
