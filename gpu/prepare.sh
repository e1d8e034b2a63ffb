#!/usr/bin/env bash
# Run here, on the CPU machine, before a GPU session's campaign run (gpu/campaign.sh): builds what the GPU
# machine needs that git does not hold, under the git-ignored .gpu/, and says which device calls carry it.
#   INIT=runs/l2c/weights.safetensors bash gpu/prepare.sh
# INIT: the weights the GPU run starts from, base network included (the GPU machine has no ImageNet package):
# the latest export of the run in progress (issue 40: L2c's, SSD384-Lite2 with the top-down path). The training pack is the 384-px pack
# of trainval_minus_minival at JPEG quality QUALITY, built once under runs/: 85 (101 MiB) by default, since a pack
# costs accuracy against the JPEGs the CPU runs train on (docs/experiments.md: 45 costs 0.5-1 point, 62 some 0.6).
# The working tree, the init weights and that pack are more than the 64 MiB that travel with one device call,
# so the pack is cut in parts: .gpu/p1/, .gpu/p2/, ... each hold one and travel alone, in calls that only receive
# them; .gpu/b/ holds the last part, the init weights and the whole pack's checksum, and travels with the last call,
# which runs the campaign. The device machine keeps the earlier parts between the calls while it stays warm (its
# idle time before it goes back is short: make each call at once); campaign.sh checks the joined pack's checksum
# and stops before training if a part is gone. Where everything fits in one call, there is no .gpu/p*.
set -euo pipefail
VOC=${VOC:-../shared/data/VOCdevkit/VOC2007}
QUALITY=${QUALITY:-85}
INIT=${INIT:-runs/l2c/weights.safetensors}
PYTHON=${PYTHON:-python}
LIMIT=$(( 64 * 1048576 ))
MARGIN=$(( 2 * 1048576 ))  # the call's own files beside the tree: git's index and what the tool adds
[ -f "$INIT" ] || { echo "INIT=$INIT: no such file (the weights the GPU run starts from)" >&2; exit 1; }
pack=runs/gpu_pack/voc07_tmm_384_q${QUALITY}.pack
mkdir -p runs/gpu_pack
[ -f "$pack" ] || nice -n 10 "$PYTHON" -m train.pack --workers 1 --data-root "$VOC" --image-set trainval_minus_minival \
    --max-side 384 --quality "$QUALITY" --out "$pack"

rm -rf .gpu && mkdir -p .gpu/b
cp "$INIT" .gpu/b/init.safetensors
card="${INIT%.safetensors}.json"  # the model card beside it says where its base came from (train: --init-weights)
[ -f "$card" ] && cp "$card" .gpu/b/init.json
sha256sum < "$pack" | cut -d' ' -f1 > .gpu/b/pack.sha256

# Every file that travels, summed (a tracked file deleted but not yet committed is not there: no size, no stop).
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null \
    | awk '{s += $1} END {print s + 0}' || true)
size=$(stat -c %s "$pack")
b_rest=$(du -cb .gpu/b | tail -1 | cut -f1)
mib() { echo "$(( ($1 + 1048575) / 1048576 )) MiB"; }
if (( tree + size + b_rest + MARGIN <= LIMIT )); then
    cp "$pack" .gpu/b/pack.part
    echo "one device call: tree $(mib "$tree") + .gpu $(mib $((size + b_rest))) of the 64 MiB that travel"
    echo "  run: command 'bash gpu/campaign.sh', carry ['.gpu'], timeout_s 600"
    exit 0
fi
# The first parts each travel alone, as large as a call allows; the last part goes with the init weights.
each=$(( LIMIT - MARGIN - tree ))
last=$(( LIMIT - MARGIN - tree - b_rest ))
(( each > 0 )) || { echo "the tree ($(mib "$tree")) leaves no room for the pack in a call" >&2; exit 1; }
(( last > 0 )) || { echo "the tree ($(mib "$tree")) and the init weights ($(mib "$b_rest")) fill a call" >&2; exit 1; }
n=$(( (size - last + each - 1) / each ))  # the calls before the last
(( n <= 9 )) || { echo "the pack ($(mib "$size")) needs over 10 calls: a lower QUALITY" >&2; exit 1; }
echo "$((n + 1)) device calls, each at once after the one before (the machine keeps .gpu/p* while it stays warm):"
for i in $(seq 1 "$n"); do
    mkdir -p ".gpu/p$i"
    dd if="$pack" of=".gpu/p$i/pack.part" bs=1M iflag=skip_bytes,count_bytes skip=$(( (i - 1) * each )) \
        count="$each" status=none
    echo "  $i. run: command 'ls -l .gpu/p$i', carry ['.gpu/p$i'], timeout_s 60" \
         "(tree $(mib "$tree") + $(mib "$(stat -c %s ".gpu/p$i/pack.part")") of the pack)"
done
tail -c +"$(( n * each + 1 ))" "$pack" > .gpu/b/pack.part
echo "  $((n + 1)). run: command 'bash gpu/campaign.sh', carry ['.gpu/b'], timeout_s 600 (tree $(mib "$tree") +" \
     "$(mib "$(stat -c %s .gpu/b/pack.part)") of the pack + init weights $(mib "$b_rest"))"
