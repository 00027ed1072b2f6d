# dpnorm node daemon: one container per organisation (see README.md, "Run on a LAN").
#
#   docker build -t dpnorm .
#   docker run --rm -v $PWD/lan/configs/0.toml:/etc/dpnorm/node.toml:ro \
#       -v $PWD/lan/out/0:/var/lib/dpnorm -v /usr/share/datasets/fashion-mnist:/data:ro \
#       -p 7000:7000 dpnorm --config /etc/dpnorm/node.toml
#
# Two stages: the build stage makes a virtual environment with CPU-only torch and the project's
# runtime dependencies; the final stage copies only that environment onto a fresh slim base.
# Left out on purpose: matplotlib (plots are drawn by the launcher, never by the daemon), the
# dev tools, torch's C++ headers, test binaries and protoc, pip caches and build tools.

ARG PYTHON_IMAGE=python:3.11-slim
ARG TORCH_VERSION=2.13.0
# Where torch comes from: PyTorch's CPU index by default (PyPI's wheel pulls several GB of CUDA
# libraries). Air-gapped builds: TORCH_INDEX=<a mirror of that index>, or TORCH_WHEEL=<URL of the
# CPU wheel>, e.g. one served on the build host: docker build --network=host
# --build-arg TORCH_WHEEL=http://127.0.0.1:8000/torch-2.13.0%2Bcpu-cp311-cp311-manylinux_2_28_x86_64.whl
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_WHEEL=

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION
ARG TORCH_INDEX
ARG TORCH_WHEEL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/dpnorm
ENV PATH=/opt/dpnorm/bin:$PATH
RUN if [ -n "$TORCH_WHEEL" ]; then pip install "$TORCH_WHEEL"; \
    else pip install "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX"; fi
WORKDIR /src
COPY pyproject.toml ./
# The runtime dependencies as pyproject.toml lists them, minus torch (installed above) and
# matplotlib (not used by the daemon); tests/lan/test_dockerfile.py keeps this in step.
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if not d.startswith(('torch', 'matplotlib'))))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt
# README (the package metadata reads it) after the dependencies, so that editing it keeps
# the dependency layer cached.
COPY README.md ./
COPY node ./node
COPY gossip ./gossip
COPY privacy ./privacy
COPY topologies ./topologies
RUN pip install --no-deps . \
 && SITE=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
 && rm -rf "$SITE/torch/include" "$SITE/torch/test" "$SITE"/torch/bin/*Test \
           "$SITE"/torch/bin/test_* "$SITE"/torch/bin/protoc*

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="dpnorm node" \
      org.opencontainers.image.description="Peer-to-peer differentially private training daemon (DP-Norm over ZeroMQ)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 dpnorm \
 && useradd --system --uid 10001 --gid dpnorm --home-dir /home/dpnorm --create-home \
            --shell /usr/sbin/nologin dpnorm \
 && mkdir -p /etc/dpnorm /data /keys /var/lib/dpnorm \
 && chown dpnorm:dpnorm /var/lib/dpnorm
COPY --from=build /opt/dpnorm /opt/dpnorm
ENV PATH=/opt/dpnorm/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMP_NUM_THREADS=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    DPNORM_PORT=7000 \
    DPNORM_OUT=/var/lib/dpnorm \
    XDG_STATE_HOME=/var/lib/dpnorm/state \
    DPNORM_HEALTH_MAX_AGE=600
USER dpnorm
WORKDIR /var/lib/dpnorm
# config (read-only) · data set (read-only) · CURVE keys (own pair + neighbours' public keys) ·
# metrics, log, checkpoint and privacy ledger (must survive a restart: the node resumes from it),
# and under state/ the data's lifetime privacy ledger (XDG_STATE_HOME: it must outlive the image).
VOLUME ["/etc/dpnorm", "/data", "/keys", "/var/lib/dpnorm"]
EXPOSE 7000/tcp
# Healthy = the node accepts TCP connections on its port (it prints READY only once bound) and
# it has written a metrics record in the last DPNORM_HEALTH_MAX_AGE seconds (a wedged round
# loop stops writing). A fresh metrics.jsonl is created empty at start-up, so data loading and
# the first round count against the same limit; raise it for models with very long rounds.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD python -c "import os, socket, sys, time; socket.create_connection(('127.0.0.1', int(os.environ['DPNORM_PORT'])), 5).close(); m = os.path.join(os.environ['DPNORM_OUT'], 'metrics.jsonl'); sys.exit(os.path.exists(m) and time.time() - os.path.getmtime(m) > float(os.environ['DPNORM_HEALTH_MAX_AGE']))"
ENTRYPOINT ["python", "-m", "node"]
CMD ["--config", "/etc/dpnorm/node.toml"]
