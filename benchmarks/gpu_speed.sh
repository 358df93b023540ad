#!/usr/bin/env bash
# Issue 17's GPU figures in one call (run from the repository root; ~7 minutes on an H200):
#   1. cifar10-vit-tiny step at batch 512, compiled (the preset's choice) vs eager: I-JEPA
#      images/s (goal >= 22,000) and the D-JEPA/I-JEPA step ratio (goal <= 1.15); the
#      same step with CUDA graphs (train.compile_mode=reduce-overhead);
#   2. the ratio at batch 2048 (goal <= 1.25);
#   3. MFU of the training step at imagenet-vit-base (ViT-B/16, 224 px) and stl10-vit-small
#      (ViT-S/8, 96 px) sizes on synthetic images (goal >= 35% of the bf16 peak for ViT-B/16);
#   4. feature extraction for evaluation: ViT-B/16 at 224 px, bf16, compiled, large batch:
#      images/s and the time of a CIFAR-10- and an ImageNet-1k-sized pass (extrapolated);
#   5. the data path at batch 512: augmentation of GPU-resident images and mask sampling on
#      the device, as images/s against the 22,000 goal (data_path.py);
#   6. D-JEPA's modulated block, split/concatenate vs grouped layout (modulation_layout.py).
# Compilation dominates the time, so every configuration is first compiled in parallel
# processes (warming the inductor caches), then measured one at a time with nothing else
# running. Stages run in order of importance; one that would pass the deadline is skipped
# and says so. Prints one SUMMARY line per figure; everything it prints and the JSON
# results go to $OUT when set (else $WORK). No data is read and nothing is installed.
#
# usage: bash benchmarks/gpu_speed.sh [PEAK_TFLOPS=989]
#   DEVICE=cpu bash benchmarks/gpu_speed.sh   # smoke test: tiny sizes, a few steps, no MFU
set -uo pipefail

PEAK=${1:-989}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
# seconds for the whole call (the lease allows 480 per command; the CPU smoke test is slower)
BUDGET=${BUDGET_S:-$([ "$DEVICE" = cpu ] && echo 5400 || echo 450)}
WORK=${WORK:-/tmp/djepa-gpu-speed}
RESULTS=${OUT:-$WORK}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
mkdir -p "$WORK/logs" "$RESULTS"
LOG=$RESULTS/gpu_speed.log
exec > >(tee "$LOG") 2>&1
START=$(date +%s)
stamp() { echo "[gpu_speed +$(( $(date +%s) - START ))s] $*"; }
left() { echo $(( START + BUDGET - $(date +%s) )); }

if [ "$DEVICE" = cpu ]; then  # smoke sizes: each stage's code path, in a minute or two
    TINY=(--set model.size=nano --set model.embed_dim=32 --set model.depth=1
          --set model.num_heads=2 --set model.predictor_dim=32 --set model.predictor_depth=1
          --set model.predictor_heads=2)
    B_SMALL=8; B_LARGE=16; B_VITB=4; B_VITS=4; B_FEAT=8; STEPS=3; WARMUP=1
    FEAT=(--size nano --patch 16 --image-size 64)
    BIG=("${TINY[@]}")
else
    TINY=(); BIG=()
    B_SMALL=512; B_LARGE=2048; B_VITB=256; B_VITS=256; B_FEAT=1024; STEPS=60; WARMUP=10
    FEAT=(--size base --patch 16 --image-size 224)
fi
STEP="$PY benchmarks/train_step.py --device $DEVICE --peak-tflops $PEAK"
# name | command (measured run); the warm run adds --warm-only
STAGES=(
    "t512|$STEP --preset cifar10-vit-tiny --batch $B_SMALL --compile both --steps $STEPS --warmup $WARMUP ${TINY[*]}"
    "t512-cudagraphs|$STEP --preset cifar10-vit-tiny --batch $B_SMALL --steps $STEPS --warmup $WARMUP --set train.compile_mode=reduce-overhead ${TINY[*]}"
    "t2048|$STEP --preset cifar10-vit-tiny --batch $B_LARGE --steps $(( STEPS / 2 )) --warmup $WARMUP ${TINY[*]}"
    "datapath|$PY benchmarks/data_path.py --device $DEVICE --preset cifar10-vit-tiny --batch $B_SMALL --repeats $STEPS"
    "b224|$STEP --preset imagenet-vit-base --batch $B_VITB --methods ijepa --steps $(( STEPS / 3 )) --warmup $WARMUP ${BIG[*]}"
    "features|$PY benchmarks/feature_throughput.py --device $DEVICE ${FEAT[*]} --batch $B_FEAT --steps $(( STEPS / 4 + 1 ))"
    "s96|$STEP --preset stl10-vit-small --batch $B_VITS --methods ijepa --steps $(( STEPS / 3 )) --warmup $WARMUP ${BIG[*]}"
    "b224-djepa|$STEP --preset imagenet-vit-base --batch $B_VITB --methods djepa --steps $(( STEPS / 3 )) --warmup $WARMUP ${BIG[*]}"
    "s96-djepa|$STEP --preset stl10-vit-small --batch $B_VITS --methods djepa --steps $(( STEPS / 3 )) --warmup $WARMUP ${BIG[*]}"
    "modulation|$PY benchmarks/modulation_layout.py --device $DEVICE --batch $B_SMALL --steps $STEPS"
)

stamp "environment"
$PY - "$DEVICE" <<'EOF'
import sys, time, torch
device = sys.argv[1]
print("torch", torch.__version__, "cuda", torch.version.cuda, "device",
      torch.cuda.get_device_name() if device == "cuda" else "cpu")
if device == "cuda":  # the bf16 matrix rate this GPU reaches, as a ceiling next to the peak
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(10):
        a @ a
    torch.cuda.synchronize()
    print(f"SUMMARY bf16 8192^3 matmul: {10 * 2 * 8192**3 / (time.perf_counter() - t) / 1e12:.0f} TFLOP/s")
EOF

stamp "compile every configuration in parallel (warms the inductor caches)"
WARM_JOBS=${WARM_JOBS:-$([ "$DEVICE" = cpu ] && echo 2 || echo 4)}
export START BUDGET WORK
for entry in "${STAGES[@]}"; do
    echo "$entry"
done | xargs -P "$WARM_JOBS" -d '\n' -n 1 bash -c '
    name=${1%%|*}; cmd=${1#*|}
    limit=$(( START + BUDGET - $(date +%s) - 150 ))  # leave time to measure
    [ "$limit" -gt 20 ] || { echo "warm $name: skipped (time)"; exit 0; }
    began=$(date +%s)
    if timeout "$limit" $cmd --warm-only > "$WORK/logs/warm-$name.log" 2>&1; then
        echo "warm $name: $(( $(date +%s) - began )) s"
    else
        echo "warm $name: failed or timed out after $(( $(date +%s) - began )) s"
        tail -5 "$WORK/logs/warm-$name.log"
    fi' _

for entry in "${STAGES[@]}"; do
    name=${entry%%|*}; cmd=${entry#*|}
    limit=$(( $(left) - 5 ))
    if [ "$limit" -lt 40 ]; then
        echo "SUMMARY $name: skipped, ${limit}s left of the ${BUDGET}s budget"
        continue
    fi
    stamp "$name"
    timeout "$limit" $cmd --json "$RESULTS/$name.json" 2>"$WORK/logs/$name.err" \
        | sed "s/^SUMMARY /SUMMARY $name /"
    status=${PIPESTATUS[0]}
    if [ "$status" -ne 0 ]; then
        echo "SUMMARY $name: failed (exit $status)"; tail -15 "$WORK/logs/$name.err"
    fi
done
stamp "done"
cp "$WORK"/logs/*.log "$RESULTS/" 2>/dev/null || true
