# v2x-cosim image: Python 3.11, the pinned PyTorch, the package. The default build is the CPU
# image; docker-compose.yml builds the GPU one (the `gpu` profile) with
#   --build-arg EXTRAS=gpu --build-arg TORCH_INDEX=https://pypi.org/simple
# (PyPI's Linux torch wheel is the CUDA build; spconv-cu120 replaces the CPU spconv).
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG EXTRAS=cpu

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md ./
COPY configkit configkit
COPY scenarios scenarios
COPY channel channel
COPY models models
COPY agents agents
COPY cosim cosim
COPY configs configs
RUN pip install -e ".[${EXTRAS}]" && mkdir -p /app/data /app/runs
CMD ["cosim", "--help"]
