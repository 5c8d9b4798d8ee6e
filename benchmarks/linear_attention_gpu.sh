#!/usr/bin/env bash
# One lent-GPU session's checks for the Pallas (Triton) linear attention: correctness of the compiled kernels,
# the timing table (forward and forward+backward) and the tile/warps/precision sweep. Run from the repo root;
# writes each table to $OUT (or ./gpu_out) as well as stdout. Uses the machine's own jax (no install needed).
set -u
out=${OUT:-gpu_out}; mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv
python3 -c "import jax, jaxlib; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, jax.devices())"
timeout 180 python3 benchmarks/linear_attention.py --check 2>&1 | tee "$out/check.txt"
timeout 240 python3 benchmarks/linear_attention.py --backward --repeats 20 2>&1 | tee "$out/timing.txt"
timeout 150 python3 benchmarks/linear_attention.py --sweep --repeats 10 2>&1 | tee "$out/sweep.txt"
