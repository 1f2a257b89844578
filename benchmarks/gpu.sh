#!/usr/bin/env bash
# One prepared command for a single-GPU machine with CUDA PyTorch installed and no network:
# images/s for DCGAN and the conv VAE, fp32 vs bf16 autocast, eager vs torch.compile.
# Usage (from the repo root):  bash benchmarks/gpu.sh [DATA_DIR]   (a folder with Fashion-MNIST's IDX files)
# Finishes in a few minutes; nothing is downloaded (genlab itself needs no network once its deps are there).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DATA_DIR="${1:-${GENLAB_DATA_DIR:-/usr/share/datasets/fashion-mnist}}"
python - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA GPU visible to PyTorch"
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PY
SECONDS_EACH="${SECONDS_EACH:-15}"
for precision in fp32 bf16; do
  for compile in "" "--compile"; do
    python benchmarks/throughput.py --device cuda --precision "$precision" $compile --no-reference \
      --presets vae:conv,gan:dcgan --seconds "$SECONDS_EACH" --data-dir "$DATA_DIR"
    echo
  done
done
