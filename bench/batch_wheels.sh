#!/usr/bin/env bash
# Wheels that `voxbox serve`, `python -m voxbox.bench` (and echo-tts) need on the GPU machine's bare CUDA image (Python 3.12,
# which has torch, numpy, httpx, typer, rich, matplotlib, safetensors, tokenizers, einops but not
# FastAPI, pydantic, uvicorn or PyAV). Run here, in the repository root; it fills .whl/ (about
# 38 MB; .gitignore has /.whl/). Then on the GPU machine, carry .whl and start the command with:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#     --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit;
# The versions are the ones the CI and the dev venv run.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  fastapi==0.165.0 starlette==1.10.0 pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 \
  python-dotenv==1.2.4 annotated-types==0.8.0 annotated-doc typing-inspection==0.4.5 typing-extensions==4.16.0 \
  opentelemetry-api==1.45.2 uvicorn==0.55.0 python-multipart==0.0.34 av==18.1.0 echo-tts==0.1.4 \
  psutil==7.2.2 anyio==4.16.0 sniffio
du -sh .whl
