#!/usr/bin/env bash
# The accuracy campaign's GPU run (issue 40): one command on the device machine, in the repository's root, after
# gpu/prepare.sh here (which says which calls carry .gpu/). It joins the training pack that travelled in one or more
# parts and checks it, measures the training speed (a 40-step probe), sizes a warmup + cosine schedule to end
# inside BUDGET_S, trains CONFIG from the init weights (.gpu/b/init.safetensors: the latest export of the CPU run,
# base network included, so the machine needs no ImageNet package) with FROZEN base layers frozen, for as many
# epochs as fit, and leaves in $OUT the fp16 weights, their card and log, the curves and the whole output. No
# evaluation there (minival and coco_voc do not travel): evaluate the weights here with python -m train.evaluate.
#   device run: bash gpu/campaign.sh            (carry and calls: as gpu/prepare.sh prints them)
#   dry run here, on the CPU, with the device's missing packages hidden:
#     PYTHONPATH=gpu/device_python DEVICE=cpu BUDGET_S=90 BATCH=4 WORKERS=1 PROBE_STEPS=4 OUT=/tmp/gpu_out \
#       bash gpu/campaign.sh
# BUDGET_S is the training's own time, inside the device tool's 10 minutes per command: the probe, the start-up
# image check, the export and the copy-back take the rest.
set -uo pipefail
export PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
BUDGET_S=${BUDGET_S:-420}
BATCH=${BATCH:-64}
CONFIG=${CONFIG:-SSD384_LITE2_VOC}
FROZEN=${FROZEN:-5}
# The CPU run's network: L2c is L2b with the top-down path into its two finest source layers.
TOP_DOWN=${TOP_DOWN:-2}
INIT=${INIT:-.gpu/b/init.safetensors}
# Linear scaling of the CPU run's lr (L2b: 0.01 at batch 16): the GPU run is the CPU schedule's whole length in
# one call (some 60 epochs), not a short fine-tune.
LR=${LR:-0.04}
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

# The pack, joined from the parts that came with the earlier calls (.gpu/p1, p2, ...: none where one call carried
# all) and the part that came with this one; a part lost with its machine shows in the checksum, before training.
PACK="$RUN/train.pack"
cat $(ls .gpu/p*/pack.part 2>/dev/null | sort -V) .gpu/b/pack.part > "$PACK"
if [ "$(sha256sum < "$PACK" | cut -d' ' -f1)" != "$(cat .gpu/b/pack.sha256 2>/dev/null)" ]; then
    echo "[gpu] the joined pack's checksum is not the one gpu/prepare.sh wrote: a part (.gpu/p*) did not stay" \
         "on the machine since its call (make the calls again, each at once after the one before)"; ls -l .gpu/*; exit 1
fi
[ -f "$INIT" ] || { echo "[gpu] no init weights at $INIT (gpu/prepare.sh puts them there)"; exit 1; }
echo "[gpu] pack $(stat -c %s "$PACK") bytes, checksum as prepared; $CONFIG, top-down $TOP_DOWN, frozen $FROZEN, from $INIT"

common=(--config "$CONFIG" --top-down "$TOP_DOWN" --frozen-base-layers "$FROZEN" --pack "$PACK" --init-weights "$INIT"
        --batch-size "$BATCH" --weight-decay 4e-5 --grad-clip 10 --workers "$WORKERS" --device "$DEVICE" --no-final-eval)

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
