#!/usr/bin/env bash
# Run here, on the CPU machine, before a GPU session's campaign run (gpu/campaign.sh): builds what the GPU
# machine needs that git does not hold, under the git-ignored .gpu/, and checks that the working tree plus it
# stay under the 64 MiB that travel with each call of the device tool.
#   VOC=../shared/data/VOCdevkit/VOC2007 QUALITY=45 bash gpu/prepare.sh
# The training pack is the 384-px pack of trainval_minus_minival at JPEG quality 45 (46 MiB; quality 62, the CPU
# runs' pack, is 59 MiB and does not fit beside the repository). The shipped weights are the start, so the GPU
# machine needs no ImageNet package (train: init weights that hold the base replace ImageNet's).
set -euo pipefail
VOC=${VOC:-../shared/data/VOCdevkit/VOC2007}
QUALITY=${QUALITY:-45}
PYTHON=${PYTHON:-python}
mkdir -p .gpu
[ -f .gpu/voc07_tmm_384.pack ] || "$PYTHON" -m train.pack --data-root "$VOC" --image-set trainval_minus_minival \
    --max-side 384 --quality "$QUALITY" --out .gpu/voc07_tmm_384.pack
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
carried=$(du -cb .gpu | tail -1 | cut -f1)
total=$(( (tree + carried) / 1048576 ))
echo "working tree $((tree / 1048576)) MiB + .gpu $((carried / 1048576)) MiB = ${total} MiB of the 64 that travel"
[ "$total" -lt 64 ] || { echo "too large: build the pack at a lower QUALITY" >&2; exit 1; }
