#!/usr/bin/env bash
# The GPU run of issue 17 on a borrowed GPU machine, from the repository root:
#   bash bench/gpu_run.sh [--models DIR] [--budget 450] ...   (arguments go to bench/gpu_run.py)
# surgeon is used from this checkout (PYTHONPATH), not installed. Where ONNX Runtime cannot find
# the CUDA and cuDNN libraries by itself, those of a PyTorch CUDA install or of pip's nvidia-*
# packages are put on LD_LIBRARY_PATH first (gpu_run.py also tries onnxruntime.preload_dlls()).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OUT="${OUT:-$PWD/gpu_out}"
PY="${PYTHON:-python3}"
libs=$("$PY" - <<'PY' 2>/dev/null
import glob, os, site
dirs = []
for base in site.getsitepackages() + [site.getusersitepackages()] + glob.glob("/opt/*/.venv/lib/python3*/site-packages"):
    dirs += sorted(glob.glob(os.path.join(base, "nvidia", "*", "lib")))
    dirs += sorted(glob.glob(os.path.join(base, "torch", "lib")))
print(":".join(d for d in dict.fromkeys(dirs) if os.path.isdir(d)))
PY
)
if [ -n "$libs" ]; then export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$libs"; fi
mkdir -p "$OUT"
# a hard stop under the 10-minute limit of one command: results are flushed after every model
timeout -s TERM "${GPU_RUN_TIMEOUT:-540}" "$PY" bench/gpu_run.py "$@" 2>&1 | tee "$OUT/gpu_run.log"
exit "${PIPESTATUS[0]}"
