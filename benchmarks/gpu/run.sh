#!/usr/bin/env bash
# The raco_jax benchmarks on one NVIDIA GPU (written for the lent single-H100 machine).
#
#   bash benchmarks/gpu/run.sh                 # from the repository root
#   OUT=/tmp/bench bash benchmarks/gpu/run.sh  # anywhere else: choose the results folder
#   QUICK=1 bash benchmarks/gpu/run.sh         # smoke run (about a minute)
#
# Needs: python3 with jax (CUDA), flax, optax, numpy, transformers, torch, safetensors; the
# lent machine's image has them (no network there: nothing is installed). On another host:
#   python3 -m pip install -e ".[train]" "jax[cuda12]"     # or jax[cuda13], per the driver
#
# Writes into $OUT (at most 8 files, the lent machine's limit): env.txt, aggregators.json,
# step.json, models.json and the logs of the three stages (stdout: the Markdown reports that go
# into benchmarks/RESULTS.md with the card, the driver and the date).
# Stages run one after another, each under `timeout`, so the whole script ends in about
# 8 minutes on an H100 (the lent machine allows 10 per command); a stage that runs out of time
# is reported and the next one starts.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$(pwd)/benchmarks/out/gpu}"
mkdir -p "$OUT"
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# One process at a time owns the GPU; let JAX take most of its memory up front (the default),
# but leave room for PyTorch's CPU side of benchmarks/models.py.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.85}"
export TF_CPP_MIN_LOG_LEVEL=1

QUICK="${QUICK:-0}"
if [ "$QUICK" = "1" ]; then
  AGG_ARGS=(--quick)
  STEP_ARGS=(--quick)
  MODEL_ARGS=(--quick)
  LIMIT=120
else
  # Aggregators: parameter counts up to 1e8 per objective (K x P stacks of up to 3.2 GB in
  # float32), bfloat16 as the paper trains. Step: the 4-layer benchmark decoder on 16 pairs of
  # 1024 tokens with a 32k vocabulary (the CPU default, 8 x 256 with 8k, leaves an H100 idle).
  AGG_ARGS=(--ks 2,3,4,8 --sizes 1e6,1e7,1e8 --dtype bfloat16 --repeats 15)
  STEP_ARGS=(--pairs 16 --seq 1024 --vocab 32768 --repeats 9)
  MODEL_ARGS=(--repeats 9)
  LIMIT=170
fi

{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
  python3 - <<'EOF'
import platform, jax, jaxlib, flax, optax, numpy
print("python", platform.python_version(), "| jax", jax.__version__, "| jaxlib", jaxlib.__version__,
      "| flax", flax.__version__, "| optax", optax.__version__, "| numpy", numpy.__version__)
print("backend", jax.default_backend(), "| devices", jax.devices())
EOF
} 2>&1 | tee "$OUT/env.txt"

stage() {  # stage NAME COMMAND...: run under the time limit, log to $OUT/NAME.log
  local name="$1"; shift
  echo "== $name: $*"
  local start=$SECONDS
  timeout "$LIMIT" "$@" 2>&1 | tee "$OUT/$name.log"
  local status=${PIPESTATUS[0]}
  echo "== $name: exit $status after $((SECONDS - start)) s"
  [ "$status" = "124" ] && echo "== $name: stopped at the ${LIMIT} s limit" | tee -a "$OUT/$name.log"
  return 0
}

# 1. One aggregator update (clipped CAGrad, CAGrad, MGDA) against the single-pass weighted sum,
#    the vmapped dual solver, and the host (NumPy/SciPy) path PyTorch libraries take.
stage aggregators python3 benchmarks/aggregators.py "${AGG_ARGS[@]}" --out "$OUT/aggregators.json"
# 2. The RACO train step (one forward, K backward) against the weighted-loss DPO step and the
#    F + K*B floor, with the compiled peak-memory estimate of each function.
stage step python3 benchmarks/step.py "${STEP_ARGS[@]}" --out "$OUT/step.json"
# 3. Decoder training step and KV-cache decoding tokens/s. The raco_jax side runs on the GPU;
#    the transformers side of this script runs on the host CPU (it never moves the PyTorch model
#    to CUDA), so only the raco_jax column is a GPU figure.
stage models python3 benchmarks/models.py "${MODEL_ARGS[@]}" --out "$OUT/models.json"

ls -l "$OUT"
