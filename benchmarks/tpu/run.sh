#!/usr/bin/env bash
# The raco_jax benchmarks on a Cloud TPU VM (one host: v4-8, v5e-8 / v5litepod-8, v5p-8, v6e-8).
#
#   INSTALL=1 bash benchmarks/tpu/run.sh   # first time on a fresh VM: pip install, then run
#   bash benchmarks/tpu/run.sh             # from the repository root
#   QUICK=1 bash benchmarks/tpu/run.sh     # smoke run
#
# Multi-host slices (v4-16 and up, v5e-16 and up): the benchmarks are single-host programs;
# run them on worker 0 only, e.g.
#   gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=0 \
#       --command "cd raco-jax && bash benchmarks/tpu/run.sh"
# and see README.md here for `raco-jax align` on every worker.
#
# Writes into $OUT (default benchmarks/out/tpu): env.txt, aggregators.json, step.json,
# models.json and one log per stage (stdout: the Markdown reports for benchmarks/RESULTS.md).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$(pwd)/benchmarks/out/tpu}"
mkdir -p "$OUT"
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

if [ "${INSTALL:-0}" = "1" ]; then
  # jax[tpu] brings libtpu from PyPI; torch (CPU) is the other side of benchmarks/models.py.
  python3 -m pip install -U pip
  python3 -m pip install -e ".[train]" "jax[tpu]" torch --extra-index-url \
    https://download.pytorch.org/whl/cpu
fi

QUICK="${QUICK:-0}"
if [ "$QUICK" = "1" ]; then
  AGG_ARGS=(--quick)
  STEP_ARGS=(--quick)
  MODEL_ARGS=(--quick)
else
  # bfloat16 is the TPU's native matmul type; 1e8 parameters per objective is 1.6 GB of
  # stacked bf16 gradients at K = 8 (fits a 16 GB v5e chip).
  AGG_ARGS=(--ks 2,3,4,8 --sizes 1e6,1e7,1e8 --dtype bfloat16 --repeats 15)
  STEP_ARGS=(--pairs 16 --seq 1024 --vocab 32768 --repeats 9)
  MODEL_ARGS=(--repeats 9)
fi

{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  python3 - <<'EOF'
import platform, jax, jaxlib, flax, optax, numpy
print("python", platform.python_version(), "| jax", jax.__version__, "| jaxlib", jaxlib.__version__,
      "| flax", flax.__version__, "| optax", optax.__version__, "| numpy", numpy.__version__)
print("backend", jax.default_backend(), "| processes", jax.process_count(),
      "| devices", jax.devices())
EOF
} 2>&1 | tee "$OUT/env.txt"

stage() {  # stage NAME COMMAND...: run one benchmark, log to $OUT/NAME.log
  local name="$1"; shift
  echo "== $name: $*"
  local start=$SECONDS
  "$@" 2>&1 | tee "$OUT/$name.log"
  echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
}

# The benchmarks place everything on the first device (one chip): per-chip figures.
stage aggregators python3 benchmarks/aggregators.py "${AGG_ARGS[@]}" --out "$OUT/aggregators.json"
stage step python3 benchmarks/step.py "${STEP_ARGS[@]}" --out "$OUT/step.json"
# The transformers side of this benchmark runs on the host CPU; only the raco_jax column is a
# TPU figure.
stage models python3 benchmarks/models.py "${MODEL_ARGS[@]}" --out "$OUT/models.json"

ls -l "$OUT"
