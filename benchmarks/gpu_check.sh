#!/usr/bin/env bash
# Every GPU measurement of texseg in one prepared run (issue #12), from the repo root of a
# CUDA machine with torch and texseg's dependencies importable:
#
#     bash benchmarks/gpu_check.sh                 # all sections, about 9 minutes on one H200
#     bash benchmarks/gpu_check.sh tests target    # some of them
#
# Sections (rough time on one H200 with 16 cores):
#   tests       CUDA-only tests: no sync in the training step, deterministic backward, ...  (~1 min)
#   throughput  images/s against batch size 8..1024 for every model, bf16, waiting vs queued
#               steps, % of the chip's peak; compile on/off at one batch size               (~3 min)
#   target      `texseg train --device cuda` for 10 s and 60 s, held-out IoU on 256 images
#               (targets: >= 0.99 in 10 s, >= 0.995 in 60 s)                                 (~2.5 min)
#   inference   megapixels/s of texseg.predict on 1024x1024 and 4096x4096 images, every model and
#               texseg:general, model on the GPU (bf16 where supported), before/after not run  (~1 min)
#   train       training images/s (`texseg train --device cuda`, 20 s, device defaults) per model    (~1.5 min)
#   generator   scene generation on the GPU                                                 (~0.5 min)
#   cpu         the machine's CPU: it/s against threads (1..16) and data-parallel processes (~2 min)
# Logs and run directories go to ${OUT:-/tmp/gpu_check}; every section prints its own table.
set -uo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
sections=${*:-tests throughput target inference train generator cpu}
want() { [[ " $sections " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
python3 -m texseg devices

if want tests; then
  echo "== CUDA tests"
  python3 -m pytest -q -p no:cacheprovider tests/test_performance.py tests/test_models.py tests/test_data.py \
    tests/test_metrics.py -k cuda 2>&1 | tail -5
fi

if want throughput; then
  echo "== throughput against batch size (bf16, channels_last; waiting = read after every step)"
  python3 benchmarks/bench_throughput.py --device cuda --models cnn,unet,seed-cnn \
    --batches 8,32,128,512,1024 --seconds 1.5 --repeats 3 | tee "$OUT/throughput.txt"
  echo "== torch.compile at batch 256"
  python3 benchmarks/bench_throughput.py --device cuda --models cnn,unet --batches 256 --compile both \
    --seconds 1.5 --repeats 3 | tee "$OUT/compile.txt"
fi

if want target; then
  echo "== time to IoU: texseg train --device cuda (device defaults), held-out IoU on 256 images"
  for budget in 10 60; do
    rm -rf "$OUT/target-$budget"
    python3 -m texseg train --device cuda --time-budget "$budget" --quiet --no-figures \
      --out "$OUT/target-$budget" | grep -E "iterations|training time|hardware|batch|val iou \(mean"
    python3 -m texseg eval "$OUT/target-$budget" --device cuda --count 256 --batch-size 256 --json \
      | python3 -c "import json,sys; m=json.load(sys.stdin)['metrics']; print('  held-out IoU (256 images): %.4f' % m['iou'])"
  done
  echo "== same seed twice on CUDA (determinism)"
  for r in a b; do
    rm -rf "$OUT/det-$r"
    python3 -m texseg train --device cuda --iterations 60 --eval-every 30 --quiet --no-figures \
      --out "$OUT/det-$r" >/dev/null 2>&1
  done
  diff <(cut -d, -f1,4- "$OUT/det-a/metrics.csv") <(cut -d, -f1,4- "$OUT/det-b/metrics.csv") \
    && echo "identical metrics" || echo "metrics differ between identical CUDA runs"
fi

if want inference; then
  echo "== inference megapixels/s on CUDA (texseg.predict; --precision auto = bf16 where the GPU has it)"
  for size in 1024 4096; do
    python3 benchmarks/bench_inference.py --device cuda --no-onnx --before "" --rounds 1 --size "$size" \
      --repeats 5 | tee "$OUT/inference-$size.txt"
  done
fi

if want train; then
  echo "== training images/s on CUDA (texseg train, device defaults, 20 s each)"
  for model in cnn unet; do
    rm -rf "$OUT/train-$model"
    python3 -m texseg train --device cuda --model "$model" --time-budget 20 --quiet --no-figures \
      --out "$OUT/train-$model" >/dev/null 2>&1
    python3 - "$OUT/train-$model" "$model" <<'PY'
import csv, json, sys
from pathlib import Path
run = Path(sys.argv[1])
rows = list(csv.DictReader(open(run / "metrics.csv")))
cfg = json.loads((run / "config.json").read_text()) if (run / "config.json").exists() else {}
last = rows[-1]
steps, secs = float(last.get("step", 0)), float(last.get("train_seconds", 0) or 1)
batch = cfg.get("batch_size") or cfg.get("config", {}).get("batch_size") or 0
print(f"  {sys.argv[2]}: {steps:.0f} steps in {secs:.1f} s, batch {batch}: {steps * float(batch or 0) / secs:.0f} images/s")
PY
  done
fi

if want generator; then
  echo "== generator on CUDA"
  python3 benchmarks/bench_generator.py --device cuda --ref-repeats 1 --repeats 50
fi

if want cpu; then
  echo "== CPU: threads (unet and cnn, fp32/bf16 as the CPU allows)"
  python3 benchmarks/bench_throughput.py --device cpu --models cnn,unet --batches 8 --threads 1,2,4,8,16 \
    --seconds 2 --repeats 2 | tee "$OUT/cpu-threads.txt"
  echo "== CPU: data-parallel processes (1 thread each)"
  python3 benchmarks/bench_distributed.py --procs 1,2,4,8,16 --model cnn --iterations 60 --repeats 1 \
    | tee "$OUT/cpu-procs.txt"
fi
