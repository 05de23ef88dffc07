#!/bin/bash
# Short ablations of the cross-camera augmentations: 1 epoch x 60 iterations from the KITTI model each.
# Usage: bash scripts/ablate_drivable.sh   (about 40 min on 2 cores; results in runs/ablate_*/log.csv)
cd "$(dirname "$0")/.."  # repository root; needs .venv (make setup) and ../shared/data
common="optim.epochs=1 optim.max_iters_per_epoch=60 optim.warmup_iters=10 eval_every=1 threads=1 data.workers=0"
for spec in "ref|" "no_aspect|data.aspect_range=null" "no_pixel_budget|data.pixel_budget=null data.base_size=188" "no_photometric|data.jitter_p=0 data.blur_p=0"; do
  name=${spec%%|*}; extra=${spec#*|}
  echo "=== $name ($extra) $(date +%T)"
  .venv/bin/pspnet train config/drivable_lite0.yaml --output-dir runs/ablate_$name --no-resume -o $common $extra 2>&1 | grep "epoch 1/1"
done
echo "=== done $(date +%T)"
