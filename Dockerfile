# Serving image on TorchServe's official image (GPU by default; the CPU one with
#   --build-arg BASE_IMAGE=pytorch/torchserve:0.12.0-cpu). docs/deployment.md has the whole walk-through.
#
#   make archive MODEL=slowfast_r50 CHECKPOINT=SLOWFAST_8x8_R50.pyth     # optional: archives in model_store/
#   docker build -t slowfast-serve:gpu .                                  # ... are baked in
#   docker run --rm --gpus all -p 127.0.0.1:8080:8080 -p 127.0.0.1:8082:8082 \
#       -v "$PWD/model_store:/home/model-server/model-store:ro" \
#       -e MODELS="slowfast_r50=slowfast_r50.mar" slowfast-serve:gpu         # ... or mounted
#   docker exec <container> cat /home/model-server/key_file.json            # the tokens
#
# The base image's Python (3.9) is too old for torch 2.11, so the pinned stack goes into its own Python 3.11
# virtual environment, installed by scripts/install.sh: the same script `make` and CI run, so every install
# step is tested there (this project's CI has no Docker engine and does not build the image). TorchServe's
# Java 17 comes from the base image. KServe runs the same image with the layout's config (deploy/kserve/).
ARG BASE_IMAGE=pytorch/torchserve:0.12.0-gpu
FROM ${BASE_IMAGE}

USER root
# The base image already lists the deadsnakes PPA (its own Python comes from there).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3.11 python3.11-venv curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/slowfast-serve
# install.sh installs the pinned stack and then this project's package (editable, from these files).
COPY requirements.txt requirements-java.txt pyproject.toml config.properties ./
COPY scripts/install.sh scripts/
COPY handler handler
COPY slowfast_serve slowfast_serve
RUN PYTHON=python3.11 scripts/install.sh --venv /opt/slowfast-serve/venv
ENV PATH="/opt/slowfast-serve/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1

# Inside the container the inference and metrics listeners take the published ports; the management API
# stays on the container's loopback (scale workers with
# `docker exec <container> slowfast-serve scale slowfast_r50 --workers 2 --key-file /home/model-server/key_file.json`).
# allowed_urls admits only the image's model store (slowfast_serve/server/torchserve.py does the same outside
# Docker).
RUN sed -e 's#^inference_address=http://127.0.0.1#inference_address=http://0.0.0.0#' \
        -e 's#^metrics_address=http://127.0.0.1#metrics_address=http://0.0.0.0#' \
        -e 's#^grpc_inference_address=127.0.0.1#grpc_inference_address=0.0.0.0#' \
        config.properties > /home/model-server/config.properties \
    && echo 'allowed_urls=file:///home/model-server/model-store/[^/]+[.]mar' >> /home/model-server/config.properties \
    && mkdir -p /home/model-server/model-store /home/model-server/tmp \
    && chown -R model-server /home/model-server
# Archives built before `docker build` (make archive) are baked in; mount a directory over it instead to
# serve others. model_store/README.md comes along and is harmless.
COPY --chown=model-server model_store/ /home/model-server/model-store/

USER model-server
WORKDIR /home/model-server
ENV TEMP=/home/model-server/tmp \
    MODELS="slowfast_r50=slowfast_r50.mar"
EXPOSE 8080 8082 7070

# /ping needs the inference token, which TorchServe writes to key_file.json in its working directory; /ping is
# healthy once every model has its minimum of workers (loading and warm-up take a while: start period).
HEALTHCHECK --interval=30s --timeout=10s --start-period=180s --retries=3 \
    CMD curl -fsS -H "Authorization: Bearer $(python3.11 -c "import json; print(json.load(open('key_file.json'))['inference']['key'])")" \
        http://127.0.0.1:8080/ping || exit 1

# TorchServe is the container's main process (exec, foreground): docker stop reaches it. KServe replaces the
# command with its runtime's args (deploy/kserve/runtime.yaml), hence no entrypoint wrapper.
ENTRYPOINT []
CMD exec torchserve --start --foreground --ncs --ts-config /home/model-server/config.properties \
    --model-store /home/model-server/model-store --models ${MODELS}
