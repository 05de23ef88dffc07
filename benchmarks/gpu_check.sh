#!/usr/bin/env bash
# GPU check: CUDA tests, engine benchmarks and a short training run, results under $OUT.
#
#   OUT=/tmp/gpu_out bash benchmarks/gpu_check.sh          # on a GPU machine (or `make gpu-check`)
#   bash benchmarks/gpu_check.sh --stage-data .gpu_data     # here: copy a data subset that fits a
#                                                           # device-machine carry (~25 MB)
#
#   bash benchmarks/gpu_check.sh --dry-run                 # here, no GPU: every step on the CPU
#                                                           # with tiny sizes (checks the script)
#
# Steps (a failing step does not stop the others; exit status 1 if any failed):
#   1. pytest test/gpu (engine, CUDA graphs, nvJPEG, and segmentation_node on CUDA: two cameras
#      of different sizes, raw and compressed, every output checked against Segmenter.predict)
#   2. pspnet bench --device cuda, shipped KITTI model    -> $OUT/bench_shipped.json
#   3. pspnet bench --device cuda --arch resnet50, 375x1242 bf16 (eager, then CUDA graphs)
#                                                         -> $OUT/bench_resnet50.json, bench_resnet50_graphs.json
#   4. benchmarks/ros_bench.py --device cuda: the node over DDS vs the engine alone, 30 and
#      200 Hz, shipped model                              -> in gpu_check.log / summary.txt
#   5. pspnet train config/kitti_road_resnet50.yaml, 2 epochs (skipped if the command is missing)
#   all console output -> $OUT/gpu_check.log, one line per step + figures -> $OUT/summary.txt
#   (at most 6 files: a device-machine run returns 8)
# Without CUDA the GPU steps are skipped with a message (test/gpu then reports its skips).
# Environment: PYTHON (default .venv/bin/python, else python3), PSPNET_DATA_ROOT (default
# ../shared/data, else ./.gpu_data), GPU_CHECK_COMPILE=1 adds a torch.compile benchmark,
# TRAIN_EPOCHS (default 2).
set -u -o pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

if [ "${1:-}" = "--stage-data" ]; then
    dest="${2:?usage: gpu_check.sh --stage-data DIR}"
    src="${PSPNET_DATA_ROOT:-$REPO/../shared/data}/kitti_road"
    ntrain="${3:-60}"
    mkdir -p "$dest/kitti_road/image_2" "$dest/kitti_road/gt_image_2"
    cp "$src/val.txt" "$dest/kitti_road/val.txt"
    head -n "$ntrain" "$src/train.txt" > "$dest/kitti_road/train.txt"
    for stem in $(cat "$dest/kitti_road/val.txt" "$dest/kitti_road/train.txt"); do
        cp "$src/image_2/$stem".* "$dest/kitti_road/image_2/"
        cat_="${stem%%_*}"; id="${stem#*_}"
        cp "$src/gt_image_2/${cat_}_road_${id}".* "$dest/kitti_road/gt_image_2/" 2>/dev/null || true
    done
    echo "staged $(ls "$dest/kitti_road/image_2" | wc -l) frames ($ntrain train + val) in $dest ($(du -sh "$dest" | cut -f1));"
    echo "carry it and set PSPNET_DATA_ROOT=$dest on the GPU machine"
    exit 0
fi

DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; fi

OUT="${OUT:-$REPO/out/gpu_check}"
mkdir -p "$OUT"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
if [ -z "${PSPNET_DATA_ROOT:-}" ]; then
    if [ -d "$REPO/../shared/data/kitti_road" ]; then export PSPNET_DATA_ROOT="$REPO/../shared/data"
    elif [ -d "$REPO/.gpu_data/kitti_road" ]; then export PSPNET_DATA_ROOT="$REPO/.gpu_data"; fi
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PSPNET=("$PYTHON" -m pspnet_ros.tools.cli)
exec > >(tee "$OUT/gpu_check.log") 2>&1

SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
FAILED=0
note() { echo "$*" | tee -a "$SUMMARY"; }
step() {  # step NAME CMD...   (output goes to the console log: a device run returns <= 8 files)
    local name="$1"; shift
    echo "=== $name: $*"
    local t0=$SECONDS
    if "$@"; then
        note "ok      $name ($((SECONDS - t0)) s)"
    else
        note "FAILED  $name ($((SECONDS - t0)) s), see gpu_check.log"
        FAILED=1
    fi
}

note "gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
"$PYTHON" - <<'EOF' | tee -a "$SUMMARY"
import platform, torch, torchvision
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, GPU: {gpu}")
EOF
HAS_CUDA=$("$PYTHON" -c "import torch; print(int(torch.cuda.is_available()))")
note "data root: ${PSPNET_DATA_ROOT:-none found (set PSPNET_DATA_ROOT; see --stage-data)}"

# 1. CUDA tests (they skip themselves, with the reason, when CUDA is absent)
step "pytest test/gpu" "$PYTHON" -m pytest test/gpu -q -rs -p no:cacheprovider

DEV=cuda
if [ "$DRY" = "1" ]; then
    # Same steps and commands on the CPU with tiny sizes and counts: proves the script and every
    # command line it runs work, in a minute or two; no figure from it means anything.
    DEV=cpu
    note "DRY RUN on the CPU: tiny sizes, the figures below are not measurements"
elif [ "$HAS_CUDA" != "1" ]; then
    note "CUDA not available: skipping the GPU benchmarks and the GPU training run (--dry-run runs them on the CPU)"
    exit $FAILED
else
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee -a "$SUMMARY" || true
fi
if [ "$DRY" = "1" ]; then
    SHIPPED=(--frames 6 --naive-frames 3 --latency-frames 3 --rounds 1)
    R50=(bench --device cpu --arch resnet50 --size 64x192 --precision fp32 --frames 4 --naive-frames 2
         --latency-frames 2 --rounds 1)
    ROSB=(--rates 5 --duration 2 --warmup 1 --frames 2)
    TRAIN_EPOCHS=1
    TRAIN_EXTRA=(optim.max_iters_per_epoch=1 optim.batch_size=2 data.crop_size=[64,64] data.eval_size=[64,192]
                 data.workers=0 device=cpu)
else
    SHIPPED=()
    R50=(bench --device cuda --arch resnet50 --size 375x1242 --precision bf16 --frames 400)
    ROSB=(--rates 30,200 --duration 10)
    TRAIN_EXTRA=(data.workers=8)
fi

# 2. the shipped model the node picks on CUDA (missing until models/ ships one)
if "$PYTHON" -c "from pspnet_ros.paths import shipped_model; shipped_model('kitti_road', 'cuda')" 2>/dev/null; then
    step "bench shipped model" \
        "${PSPNET[@]}" bench --device "$DEV" "${SHIPPED[@]}" --json "$OUT/bench_shipped.json"
else
    note "skip    bench shipped model: no shipped CUDA model for kitti_road in models/ yet"
fi

# 3. PSPNet-ResNet-50 at the full 375x1242 frame, bf16: eager, then with CUDA graphs
step "bench resnet50 bf16" "${PSPNET[@]}" "${R50[@]}" --json "$OUT/bench_resnet50.json"
step "bench resnet50 bf16 cuda-graphs" \
    "${PSPNET[@]}" "${R50[@]}" --cuda-graphs --skip-naive --json "$OUT/bench_resnet50_graphs.json"
if [ "${GPU_CHECK_COMPILE:-0}" = "1" ]; then
    step "bench resnet50 bf16 compile+graphs" \
        "${PSPNET[@]}" "${R50[@]}" --compile --cuda-graphs --skip-naive --json "$OUT/bench_resnet50_compile.json"
fi

# 4. the node over DDS against the engine alone (node targets), shipped model
step "ros_bench node vs engine" "$PYTHON" benchmarks/ros_bench.py --checkpoint auto --device "$DEV" "${ROSB[@]}"

# 5. a short training run (the recipe's GPU settings, few epochs, outputs outside $OUT: the
#    checkpoints are large)
if "$PYTHON" -c "import importlib; importlib.import_module('pspnet_ros.tools.training.train')" 2>/dev/null; then
    RUN_DIR="${TMPDIR:-/tmp}/gpu_check_train"
    rm -rf "$RUN_DIR"
    step "train resnet50 (${TRAIN_EPOCHS:-2} epochs)" \
        "${PSPNET[@]}" train config/kitti_road_resnet50.yaml --no-resume --output-dir "$RUN_DIR" \
        --override "optim.epochs=${TRAIN_EPOCHS:-2}" eval_every=1 "${TRAIN_EXTRA[@]}"
else
    note "skip    training: pspnet train is not available in this checkout"
fi

for j in "$OUT"/bench_*.json; do
    [ -f "$j" ] || continue
    "$PYTHON" - "$j" <<'EOF' | tee -a "$SUMMARY"
import json, sys
r = json.load(open(sys.argv[1]))
ratio = f"{r['ratio']:.2f}x naive" if r.get("ratio") else "naive skipped"
print(f"{sys.argv[1].rsplit('/', 1)[-1]}: {r['model']} {r['precision']} {r['input_size']} on {r['device_name']}: "
      f"engine {r['engine_fps']} fps ({ratio}), latency p50 {r['latency_ms']['p50']} ms")
EOF
done
exit $FAILED
