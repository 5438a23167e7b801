#!/usr/bin/env bash
# The GPU checks as one command for a lent device machine: tests/gpu, then benchmarks/gpu_backends.py.
#
# That machine (one H100/H200; torch, transformers, accelerate, pytest; Python 3.12) reaches no package
# registry, so what it lacks travels with the repo as wheels in .whl/ (ignored by git; about 50 MB of the
# 64 MiB a call may carry; vLLM cannot travel that way and is skipped there, saying so):
#
#   here, once:          bash benchmarks/gpu_run.sh fetch
#   on the device:       run(command="bash benchmarks/gpu_run.sh", carry=[".whl"], timeout_s=600)
#
# On the device it installs the wheels into /tmp/site, runs tests/gpu (limit 170 s) and the benchmark
# (limit 400 s, no new measurement after 280 s), and leaves the logs and the benchmark's JSON in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(bitsandbytes==0.50.2 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
        typing-inspection==0.4.5 typing-extensions==4.16.0 rapidfuzz==3.14.6)

if [ "${1:-}" = fetch ]; then
    exclude=$(git rev-parse --git-path info/exclude) && mkdir -p "$(dirname "$exclude")"
    grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
    mkdir -p .whl
    exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
fi

OUT=${OUT:-/tmp/gpu-run-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || echo "wheel install failed: bnb precisions and invoicelab imports may be skipped"
fi
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'transformers', transformers.__version__)" 2>&1 | tee -a "$OUT/gpu.txt"

timeout 170 python3 -m pytest -q -p no:cacheprovider -rs tests/gpu 2>&1 | tee "$OUT/gpu_tests.log"
tests=${PIPESTATUS[0]}
timeout 400 python3 benchmarks/gpu_backends.py --no-install --budget-s 280 --out "$OUT/gpu_backends.json" 2>&1 \
    | tee "$OUT/gpu_backends.log"
bench=${PIPESTATUS[0]}
echo "tests/gpu exit $tests, benchmark exit $bench" | tee -a "$OUT/gpu.txt"
exit $(( tests != 0 || bench != 0 ))
