# Extractive question answering (DistilBERT) for Amazon SageMaker: nginx -> gunicorn -> handler.
#
# Build (build.sh fetches the pinned wheels on the host first, so it also works behind a proxy or
# air gap, and can bake a model in; see ./build.sh --help):
#   ./build.sh --tag distilbert-qa:dev
# Two targets: `full` (the default: serves any model, makes graphs at start-up when none were
# shipped) and `slim` (no PyTorch or transformers: serves models whose graphs were made ahead of
# time; ./build.sh --slim, README "Slim image").
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

# ---- the virtual environments, from wheels only -------------------------------------------------
FROM ${BASE_IMAGE} AS python

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

FROM python AS wheels
# PyTorch's CPU-only index (PyPI's default Linux torch is the multi-GB CUDA build). Only used
# when no wheelhouse was supplied.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV TORCH_INDEX_URL=${TORCH_INDEX_URL}
# build.sh puts the pinned wheels (and, with --ca-bundle, an extra CA bundle) in wheelhouse/;
# the [e] glob lets a plain `docker build` without one go on and install from the network.
COPY requirements.txt requirements-slim.txt docker/make-venv.sh wheelhous[e] /tmp/wheelhouse/

# The full environment: serves anything, makes graphs (torch, transformers, onnx, NNCF).
FROM wheels AS venv-full
# PyTorch's C++ tests, headers and protoc serve only building extensions and testing torch (~190 MB).
RUN /tmp/wheelhouse/make-venv.sh /tmp/wheelhouse -r requirements.txt \
 && torch=/opt/venv/lib/python3.11/site-packages/torch \
 && rm -rf "$torch/test" "$torch/include" "$torch"/bin/test_* "$torch"/bin/*Test "$torch"/bin/protoc*
# The versions of the libraries that shape a graph, which the slim image names graphs by.
COPY qa/ /tmp/qa/
RUN cd /tmp && /opt/venv/bin/python -m qa.graph_files >/tmp/builder_versions.json

# The slim environment: serves graphs made ahead of time. OpenVINO keeps its CPU plugin and its
# ONNX and IR readers; its GPU and NPU plugins, other frameworks' readers and headers go (~75 MB).
# SciPy is there only because the toolkit's decoder imports scipy.sparse when MMS starts: that
# and scipy._lib stay, the other subpackages and their BLAS go (~110 MB); test_container_slim.py
# starts MMS on this image.
FROM wheels AS venv-slim
RUN /tmp/wheelhouse/make-venv.sh /tmp/wheelhouse -c requirements.txt -r requirements-slim.txt \
 && packages=/opt/venv/lib/python3.11/site-packages \
 && ov=$packages/openvino \
 && rm -rf "$ov/include" "$ov/libs/cache.json" "$ov"/libs/libopenvino_intel_[gn]pu_plugin.so \
 && for reader in gguf jax paddle pytorch tensorflow tensorflow_lite; do \
        rm -f "$ov"/libs/libopenvino_${reader}_frontend.so*; \
    done \
 && rm -rf "$packages/scipy.libs" \
 && for sub in "$packages"/scipy/*/; do \
        case "$sub" in */_lib/|*/sparse/) ;; *) rm -rf "$sub" ;; esac; \
    done \
 && /opt/venv/bin/python -c "import sagemaker_inference.model_server" 2>/dev/null

# ---- the Java runtime of Multi Model Server (multi-model endpoints) ------------------------------
# A runtime of only the modules MMS's jar uses (`jdeps --print-module-deps` on its classes, plus
# the logging and XML modules log4j2 loads by reflection): ~50 MB instead of the JRE package's
# ~180 MB and its font and desktop libraries.
FROM ${BASE_IMAGE} AS jre
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jdk-headless binutils \
 && rm -rf /var/lib/apt/lists/* \
 && jlink --output /opt/jre --strip-debug --no-man-pages --no-header-files --compress=2 \
          --add-modules java.base,java.compiler,java.desktop,java.logging,java.management,java.naming,java.rmi,java.scripting,java.sql,java.xml,jdk.sctp,jdk.unsupported,jdk.crypto.ec

# ---- the code, compiled to bytecode at build time (the root filesystem may be read-only) ---------
FROM python AS program
COPY entrypoint.py /opt/program/
COPY docker/ /opt/program/docker/
COPY qa/ /opt/program/qa/
COPY serving/ /opt/program/serving/
COPY code/ /opt/program/code/
RUN python3 -m compileall -q /opt/program

# ---- what both images run on ----------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
ARG BASE_IMAGE

# OpenVINO's telemetry (sent by NNCF when it quantizes) is declined in its consent file, as
# `opt_in_out --opt_out` would write it, without its network call.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 nginx ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /etc/nginx/sites-enabled/default \
 && ln -sf /dev/stderr /var/log/nginx/error.log \
 && ln -sf /dev/stdout /var/log/nginx/access.log \
 && mkdir -p /root/intel && echo 0 >/root/intel/openvino_telemetry \
 && groupadd --system --gid 10001 qa \
 && useradd --system --uid 10001 --gid qa --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin qa

COPY --from=jre /opt/jre /opt/jre
ENV PATH=/opt/venv/bin:/opt/jre/bin:$PATH \
    JAVA_HOME=/opt/jre \
    PYTHONPATH=/opt/program \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /opt/program

ARG GIT_REVISION=unknown
ARG VERSION=dev
LABEL org.opencontainers.image.title="distilbert-qa" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_REVISION}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      com.amazonaws.sagemaker.capabilities.accept-bind-to-port="true" \
      com.amazonaws.sagemaker.capabilities.multi-models="true"

EXPOSE 8080
# Exec form: entrypoint.py is PID 1, gets SIGTERM from `docker stop` and supervises nginx + gunicorn.
ENTRYPOINT ["/opt/venv/bin/python", "/opt/program/entrypoint.py"]
CMD ["serve"]

# ---- the slim image (docker build --target slim; ./build.sh --slim) -------------------------------
# Serves models whose graphs are present (shipped in the model, or baked by build.sh --slim --model).
FROM runtime AS slim
# Dependencies before code: a code change rebuilds only the small layer after them.
COPY --from=venv-slim /opt/venv /opt/venv
COPY --from=program /opt/program /opt/program
COPY --from=venv-full /tmp/builder_versions.json /opt/program/qa/builder_versions.json
LABEL org.opencontainers.image.description="Extractive question answering for SageMaker, slim: serves graphs made ahead of time (no PyTorch); nginx + gunicorn; Multi Model Server for multi-model endpoints"

# ---- the full image (the default target) ----------------------------------------------------------
FROM runtime AS full
COPY --from=venv-full /opt/venv /opt/venv
COPY --from=program /opt/program /opt/program
LABEL org.opencontainers.image.description="Extractive question answering (DistilBERT) for SageMaker: nginx + gunicorn; Multi Model Server for multi-model endpoints"
