# Extractive question answering (DistilBERT) for Amazon SageMaker: nginx -> gunicorn -> handler.
#
# Build (build.sh fetches the pinned wheels on the host first, so it also works behind a proxy or
# air gap, and can bake a model in; see ./build.sh --help):
#   ./build.sh --tag distilbert-qa:dev
# Plain Docker on a machine with internet access (pip reaches PyPI and PyTorch's CPU index):
#   docker build -t distilbert-qa:dev .
# Run, with a model saved by transformers' save_pretrained in ./model:
#   docker run --rm -p 8080:8080 -v "$PWD/model:/opt/ml/model:ro" distilbert-qa:dev serve
#   curl -s localhost:8080/invocations -H 'Content-Type: application/json' \
#        -d '{"inputs": {"question": "Who?", "context": "Ada wrote it."}}'
# Configuration is by environment variable only: see the table in README.md ("Configuration").
#
# The image starts as root, as SageMaker expects: it starts the container as root and mounts
# /opt/ml/model for that user. The processes that parse request bytes (nginx's worker, gunicorn's
# workers) then run as the unprivileged user `qa` (serving/privileges.py). Nothing here needs to
# write outside /tmp, so `--read-only` works.

# Debian 12, the release whose python3 (3.11) matches the pinned wheels. For a byte-for-byte
# reproducible build pass a digest: --build-arg BASE_IMAGE=debian:bookworm-slim@sha256:...
ARG BASE_IMAGE=debian:bookworm-slim

# ---- builder: the virtual environment, from wheels only ----------------------------------------
FROM ${BASE_IMAGE} AS builder

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

# PyTorch's CPU-only index (PyPI's default Linux torch is the multi-GB CUDA build). Only used
# when no wheelhouse was supplied.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# build.sh puts the pinned wheels (and, with --ca-bundle, an extra CA bundle) in wheelhouse/;
# the [e] glob lets a plain `docker build` without one go on and install from the network.
COPY requirements.txt wheelhous[e] /tmp/wheelhouse/
RUN set -eu; \
    python3 -m venv /opt/venv; \
    if ls /tmp/wheelhouse/*.whl >/dev/null 2>&1; then \
        source="--no-index --find-links /tmp/wheelhouse"; \
    else \
        source="--extra-index-url $TORCH_INDEX_URL"; \
        if [ -f /tmp/wheelhouse/ca-bundle.crt ]; then export PIP_CERT=/tmp/wheelhouse/ca-bundle.crt; fi; \
    fi; \
    /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check $source \
        -r /tmp/wheelhouse/requirements.txt; \
    /opt/venv/bin/pip check; \
    # PyTorch's C++ tests, headers and protoc serve only building extensions and testing torch (~190 MB).
    torch=/opt/venv/lib/python3.11/site-packages/torch; \
    rm -rf "$torch/test" "$torch/include" "$torch"/bin/test_* "$torch"/bin/*Test "$torch"/bin/protoc*

# ---- runtime ------------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
ARG BASE_IMAGE

# The JRE is for Multi Model Server (multi-model endpoints). openjdk's postinst needs the man
# directory that slim images leave out.
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3 nginx openjdk-17-jre-headless ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /etc/nginx/sites-enabled/default \
 && ln -sf /dev/stderr /var/log/nginx/error.log \
 && ln -sf /dev/stdout /var/log/nginx/access.log

# Dependencies before code: a code change rebuilds only the small layers below.
COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/program \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /opt/program
COPY entrypoint.py /opt/program/
COPY docker/ /opt/program/docker/
COPY qa/ /opt/program/qa/
COPY serving/ /opt/program/serving/
COPY code/ /opt/program/code/
# Bytecode compiled at build time: the root filesystem may be read-only at run time. OpenVINO's
# telemetry (sent by NNCF when it quantizes) is declined in its consent file, as `opt_in_out
# --opt_out` would write it, without that command's own network call.
RUN /opt/venv/bin/python -m compileall -q /opt/program \
 && mkdir -p /root/intel && echo 0 >/root/intel/openvino_telemetry \
 && groupadd --system --gid 10001 qa \
 && useradd --system --uid 10001 --gid qa --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin qa

ARG GIT_REVISION=unknown
ARG VERSION=dev
LABEL org.opencontainers.image.title="distilbert-qa" \
      org.opencontainers.image.description="Extractive question answering (DistilBERT) for SageMaker: nginx + gunicorn; Multi Model Server for multi-model endpoints" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_REVISION}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      com.amazonaws.sagemaker.capabilities.accept-bind-to-port="true" \
      com.amazonaws.sagemaker.capabilities.multi-models="true"

EXPOSE 8080
# Exec form: entrypoint.py is PID 1, gets SIGTERM from `docker stop` and supervises nginx + gunicorn.
ENTRYPOINT ["/opt/venv/bin/python", "/opt/program/entrypoint.py"]
CMD ["serve"]
