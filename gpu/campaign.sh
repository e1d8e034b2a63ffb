#!/usr/bin/env bash
# The accuracy campaign's GPU run (issue 23): one command on the device machine, in the repository's root,
# after gpu/prepare.sh here. It measures the training speed first (a 40-step probe), sizes a warmup + cosine
# schedule to end inside BUDGET_S, trains SSD384-Lite0 from the shipped weights with stem + blocks 0-2 frozen
# (the CPU campaign's best recipe, C4) for as many epochs as fit, and leaves in $OUT the fp16 weights, their
# card and log, the curves and the whole output. No evaluation there (minival does not travel): evaluate the
# weights here with python -m train.evaluate --weights ... --data-root VOCdevkit/VOC2007 --image-set minival.
#   device run: bash gpu/campaign.sh            (carry: [".gpu"], timeout_s 600)
#   dry run here, on the CPU: DEVICE=cpu BUDGET_S=90 BATCH=4 WORKERS=1 PROBE_STEPS=4 OUT=/tmp/gpu_out bash gpu/campaign.sh
# BUDGET_S is the training's own time, inside the device tool's 10 minutes per command: the probe, the start-up
# image check, the export and the copy-back take the rest.
set -uo pipefail
export PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
BUDGET_S=${BUDGET_S:-420}
BATCH=${BATCH:-64}
# Linear scaling of the CPU runs' lr 0.015 at batch 16 (S0's fresh schedule): with ~100 epochs this is a new
# training of the heads and blocks 3+, not a short fine-tune.
LR=${LR:-0.03}
WORKERS=${WORKERS:-14}
PROBE_STEPS=${PROBE_STEPS:-40}
OUT=${OUT:-runs/gpu_out}
RUN=${RUN:-runs/gpu_campaign}
mkdir -p "$OUT" "$RUN"
LOG="$OUT/campaign.out"
exec > >(tee -a "$LOG") 2>&1

"$PYTHON" - <<'PY' || exit 1
import os, platform, torch, torchvision
cuda = torch.cuda.is_available()
print(f"[gpu] torch {torch.__version__}, torchvision {torchvision.__version__}, python {platform.python_version()}, "
      f"cuda {torch.version.cuda if cuda else 'none'}, {torch.cuda.get_device_name(0) if cuda else 'no GPU'}, "
      f"{os.cpu_count()} CPUs")
PY

common=(--config SSD384_LITE0_VOC --frozen-base-layers 4 --pack .gpu/voc07_tmm_384.pack
        --init-weights ssd/weights/ssd384_lite0_voc07.safetensors --batch-size "$BATCH" --weight-decay 4e-5
        --grad-clip 10 --workers "$WORKERS" --device "$DEVICE" --no-final-eval)

# 1. The probe: PROBE_STEPS steps at the full lr after a short warmup, timed by the trainer's own log.
rm -rf "$RUN/probe"
"$PYTHON" -m train "${common[@]}" --lr "$LR" --warmup-steps 10 --max-steps "$PROBE_STEPS" --log-every 5 \
    --out "$RUN/probe" || { echo "[gpu] the probe failed"; exit 1; }
read -r IMG_S STEPS WARMUP < <("$PYTHON" - "$RUN/probe/log.csv" "$BUDGET_S" "$BATCH" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
later = [float(r["img_per_s"]) for r in rows[len(rows) // 2:]]  # past cudnn's autotuning and the first batches
img_s = statistics.median(later)
steps = max(20, int(0.95 * float(sys.argv[2]) * img_s / int(sys.argv[3])))
print(f"{img_s:.1f} {steps} {max(5, min(500, steps // 20))}")
PY
)
echo "[gpu] probe: ${IMG_S} img/s at batch ${BATCH}: ${STEPS} steps (${WARMUP} warmup) in ${BUDGET_S} s," \
     "$(( STEPS * BATCH / 3761 )) epochs of trainval_minus_minival"

# 2. The run: the schedule sized to the budget; the time budget only guards against a slower machine.
"$PYTHON" -m train "${common[@]}" --lr "$LR" --warmup-steps "$WARMUP" --max-steps "$STEPS" --log-every 50 \
    --time-budget-s "$BUDGET_S" --out "$RUN/main"
status=$?
for f in weights.safetensors weights.json weights.log.csv; do cp "$RUN/main/$f" "$OUT/" 2>/dev/null; done
"$PYTHON" -m visualize.plots "$RUN/main" --out "$OUT/curves.png" || echo "[gpu] no curves"
ls -la "$OUT"
exit $status
