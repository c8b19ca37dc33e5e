# Training image: CUDA PyTorch + relidar (distill, evaluate, export). PyPI's torch wheels bring their
# own CUDA libraries; the host's driver comes in with `--gpus all` (NVIDIA container toolkit).
#
#   docker build -f docker/train.Dockerfile -t relidar/train .
#   docker run --rm --gpus all --ipc host -v $PWD/data:/data -v $PWD/runs:/opt/relidar/runs relidar/train \
#       relidar --help
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 libgomp1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/relidar
# The same pinned requirements CI installs from.
COPY requirements.txt requirements-runtime.txt ./
RUN pip install -r requirements.txt
COPY pyproject.toml README.md ./
COPY relidar/ relidar/
RUN pip install --no-deps .
CMD ["relidar", "--help"]
