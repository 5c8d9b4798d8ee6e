#!/usr/bin/env bash
# The one-shot GPU script (one run of <= 8 minutes on a lent H100 / H200): everything that waits for a GPU, each
# step under its own timeout so one failure costs only its own time.
#   1. the Pallas (Triton) linear attention: compiled kernels against fp32 XLA (--check), forward(+backward) timing
#   2. the full-size generation (480p bf16 and int8, 720p bf16): per-stage seconds, s/step, DiT MFU, peak memory
#      (benchmarks/full_size.py, one process per row so each peak is its own)
#   3. the 480p memory plan from the GPU's own compiled programs (benchmarks/memory_plan.py), CFG batched and in two
#      calls
#   4. bf16 vs int8 / w8a8 / fp8 forward time (benchmarks/quantization.py)
# Run from the repo root with the qwix wheel (not in the GPU image) in .whl:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl qwix==0.1.8
#   device run: bash benchmarks/gpu.sh          (carry: [".whl"]); writes each table to $OUT (or ./gpu_out)
#   dry run on CPU at toy sizes:  TINY=1 bash benchmarks/gpu.sh
set -u
out=${OUT:-gpu_out}; mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
tiny=${TINY:+--tiny}
la_shapes=${TINY:+small}; la_shapes=${la_shapes:-published}
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv 2>/dev/null
$py -c "import jax, jaxlib; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, jax.devices())"

step() {  # step NAME SECONDS COMMAND...: run, tee to $out/NAME.txt, say how it ended
  local name=$1 limit=$2; shift 2
  echo "=== $name ($(date -u +%T), limit ${limit}s): $*"
  local start=$SECONDS
  timeout "$limit" "$@" > >(tee "$out/$name.txt") 2>&1
  echo "=== $name: exit $? after $((SECONDS - start)) s"
}

step linear_attention_check 60 $py benchmarks/linear_attention.py --check --shapes "$la_shapes"
step linear_attention_timing 75 $py benchmarks/linear_attention.py --backward --repeats 10 --shapes "$la_shapes"
for row in "480p bf16 120" "480p int8 75" "720p bf16 100"; do
  set -- $row
  step "full_size_$1_$2" "$3" $py benchmarks/full_size.py --resolutions "$1" --modes "$2" $tiny ${TINY:+--steps 3}
done
step memory_plan 45 $py benchmarks/memory_plan.py --resolutions 480p --modes bf16 int8 $tiny
step memory_plan_cfg_sequential 30 $py benchmarks/memory_plan.py --resolutions 480p --modes int8 --cfg-sequential $tiny
step quantization 45 $py benchmarks/quantization.py --repeats 5 $tiny
echo "=== done $(date -u +%T)"
