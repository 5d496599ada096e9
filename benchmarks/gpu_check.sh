#!/usr/bin/env bash
# One prepared check on a CUDA machine (run from the repo root; needs torch with CUDA and
# texseg's dependencies importable). CUDA tests, generator speed, training speed and the
# 30-second target on the GPU. Writes logs and run directories under ${OUT:-/tmp/gpu_check}.
set -uo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

echo "== CUDA tests"
python3 -m pytest -q -p no:cacheprovider tests/test_data.py tests/test_models.py tests/test_metrics.py -k cuda 2>&1 | tail -3

echo "== generator on CUDA"
python3 benchmarks/bench_generator.py --device cuda --ref-repeats 5 --repeats 50

echo "== training, 30 s budget each"
for bs in 4 32; do
  python3 -m texseg.cli train --device cuda --batch-size "$bs" --quiet --out "$OUT/run-bs$bs" 2>&1 | tail -12
done

echo "== same seed twice on CUDA (determinism)"
for r in a b; do
  python3 -m texseg.cli train --device cuda --iterations 60 --eval-every 30 --quiet --out "$OUT/det-$r" >/dev/null 2>&1
done
diff <(cut -d, -f1,4- "$OUT/det-a/metrics.csv") <(cut -d, -f1,4- "$OUT/det-b/metrics.csv") \
  && echo "identical metrics" || echo "metrics differ between identical CUDA runs"
