# Serving image: the pinned stack (installed by scripts/install.sh, the same script `make` and CI use), the
# handler package and the TorchServe config. Archives are built outside (`make archive ...`) and mounted.
#
#   docker build -t slowfast-serve .
#   docker run --rm -p 127.0.0.1:8080:8080 -p 127.0.0.1:8082:8082 \
#       -v "$PWD/model_store:/home/model-server/model_store:ro" slowfast-serve
#   docker exec <container> cat /home/model-server/key_file.json     # the tokens
#
# Not built in this project's CI (no Docker engine there); every install step lives in scripts/install.sh,
# which CI runs. A GPU image on TorchServe's official base is future work (see the README).
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 model-server

WORKDIR /opt/slowfast-serve
COPY requirements.txt ./
COPY scripts/install.sh scripts/grpc_stubs.py scripts/
RUN scripts/install.sh --python python3
COPY handler handler
COPY scripts scripts
COPY config.properties ./

# Inside the container the inference and metrics listeners take the published ports; the management API
# stays on the container's loopback (scale workers with `docker exec ... curl`). allowed_urls admits only the
# mounted model store (scripts/torchserve_ctl.py does the same outside Docker; see SECURITY.md).
RUN sed -e 's#^inference_address=http://127.0.0.1#inference_address=http://0.0.0.0#' \
        -e 's#^metrics_address=http://127.0.0.1#metrics_address=http://0.0.0.0#' \
        config.properties > /home/model-server/config.properties \
    && echo 'allowed_urls=file:///home/model-server/model_store/[^/]+[.]mar' >> /home/model-server/config.properties \
    && mkdir -p /home/model-server/model_store \
    && chown -R model-server /home/model-server

USER model-server
WORKDIR /home/model-server
ENV MODELS="slowfast_r50=slowfast_r50.mar"
EXPOSE 8080 8082

# /ping needs the inference token, which TorchServe writes to key_file.json in its working directory.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s CMD python3 -c "import json, urllib.request; \
key = json.load(open('key_file.json'))['inference']['key']; \
urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:8080/ping', \
headers={'Authorization': 'Bearer ' + key}), timeout=5)"

CMD torchserve --start --foreground --ncs --ts-config /home/model-server/config.properties \
    --model-store /home/model-server/model_store --models $MODELS
