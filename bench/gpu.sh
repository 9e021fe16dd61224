#!/usr/bin/env bash
# Both benchmarks on one CUDA device, then one summary, in at most ~7.5 minutes of wall time (hard time box).
#
#   bench/gpu.sh DATA_DIR [VARIANT]   DATA_DIR: a folder from bench/prepare_data.py (default bench/data)
#                                     VARIANT: optional changed copy of the kernel script, A/B'd as kit_variant
#
# For the device tool: prepare here with `.venv/bin/python bench/prepare_data.py`, then run
#   bash bench/gpu.sh bench/data      with carry ["bench/data"]
# The GPU machine has python3 with torch, transformers and peft but no `datasets` and no ../shared: the
# prepared folder is plain text. Results (JSON, logs, summary) go to $OUT when it is set, else a temp folder.
#
# Environment: PYTHON (default python3), BENCH_DEVICE (default cuda), BENCH_QUICK=1 (a dry run of this
# script's logic: tiny model, 1 s windows; with BENCH_DEVICE=cpu it runs on a laptop in about a minute).
set -uo pipefail

DATA=${1:-bench/data}
VARIANT=${2:-}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
DEVICE=${BENCH_DEVICE:-cuda}
QUICK=${BENCH_QUICK:-0}
RESULTS=${OUT:-$(mktemp -d -t gpubench.XXXXXX)}
BUDGET=${BENCH_BUDGET:-450}   # seconds for everything below; the device tool's limit is 600, the brief 480
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
START=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - START) )); }

if [ ! -f "$DATA/manifest.json" ]; then
  echo "error: $DATA has no manifest.json; run: python bench/prepare_data.py --out $DATA" >&2
  exit 2
fi
mkdir -p "$RESULTS"

{
  echo "== gpu.sh $(date -u +%Y-%m-%dT%H:%M:%SZ) device=$DEVICE quick=$QUICK data=$DATA results=$RESULTS"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm \
    --format=csv,noheader
  "$PY" - <<'EOF'
import importlib, platform
import torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available(), "gpus", torch.cuda.device_count())
for name in ("transformers", "peft", "pandas", "tokenizers", "datasets"):
    try:
        print(f"  {name} {importlib.import_module(name).__version__}")
    except ImportError:
        print(f"  {name} missing")
EOF
} 2>&1 | tee "$RESULTS/env.txt"

if [ -n "$VARIANT" ] && [ ! -f "$VARIANT" ]; then
  echo "error: variant kernel $VARIANT not found" >&2
  exit 2
fi
WINDOW=${BENCH_WINDOW:-$([ -n "$VARIANT" ] && echo 12 || echo 15)}   # a fourth side: shorter windows
if [ "$QUICK" = 1 ]; then
  T_ARGS=(--tiny --window 1 --repeats 2 --warmup 0 --warmup-steps 1)
  I_ARGS=(--tiny --limit 256 --repeats 2)
else
  T_ARGS=(--window "$WINDOW" --repeats 3 --warmup 8)
  I_ARGS=(--repeats 5)
fi
[ -n "$VARIANT" ] && T_ARGS+=(--variant "$VARIANT")

# Training: ~3 min (3 sides x 3 repeats x 15 s, or 4 x 3 x 12 s with a variant; warm-up 8 s a side; model
# builds); time box 220 s inside, killed at 280 s.
T_LIMIT=$(( $(left) < 280 ? $(left) : 280 ))
echo "== throughput (time limit ${T_LIMIT}s)"
timeout -k 10 "$T_LIMIT" "$PY" "$HERE/throughput.py" --device "$DEVICE" --data "$DATA" "${T_ARGS[@]}" \
  --max-seconds $(( T_LIMIT - 60 )) --json --out "$RESULTS/throughput.json" \
  2> >(tee "$RESULTS/throughput.log" >&2) > /dev/null
T_RC=$?
echo "== throughput exit $T_RC after $(( $(date +%s) - START ))s"

# Prediction: the whole test file, 5 alternating passes a side; ~1 min.
I_LIMIT=$(( $(left) < 150 ? $(left) : 150 ))
if [ "$I_LIMIT" -gt 30 ]; then
  echo "== inference (time limit ${I_LIMIT}s)"
  timeout -k 10 "$I_LIMIT" "$PY" "$HERE/inference.py" --device "$DEVICE" --data "$DATA" "${I_ARGS[@]}" \
    --max-seconds $(( I_LIMIT - 45 )) --json --out "$RESULTS/inference.json" \
    2> >(tee "$RESULTS/inference.log" >&2) > /dev/null
  I_RC=$?
else
  echo "== inference skipped: only $(left)s of the budget left"
  I_RC=124
fi
echo "== inference exit $I_RC after $(( $(date +%s) - START ))s"

echo
echo "================================ summary ================================"
"$PY" "$HERE/common.py" summary "$RESULTS/throughput.json" "$RESULTS/inference.json" | tee "$RESULTS/summary.txt"
echo "total wall time $(( $(date +%s) - START ))s; results in $RESULTS" | tee -a "$RESULTS/summary.txt"
[ "$T_RC" = 0 ] && [ "$I_RC" = 0 ]
