#!/usr/bin/env bash
# GPU check of the trainer (run from the repository root on a GPU machine, ~8 minutes):
#   1. decode CIFAR-10 once (cached under $WORK/cache);
#   2. cifar10-vit-tiny (ViT-T/4, bf16) train-step benchmark: ~250 steps, images/s and
#      MFU of each method and the djepa/ijepa step-time ratio;
#   3. each method trained for about SECONDS of wall time (epochs sized from the measured
#      throughput, GPU-resident data), then kNN@20 (T=0.07, 50k bank, 10k test) of the
#      final target encoders and of the same encoder at initialisation.
# Prints one SUMMARY line per stage. Needs python3 with torch, timm, typer, rich, sklearn,
# pandas and yaml (faiss optional). Results (logs, meta, JSON) are copied to $OUT if set.
#
# usage: bash benchmarks/gpu_check.sh DATA_ROOT [SECONDS_PER_METHOD=150] [PEAK_TFLOPS=989]
set -euo pipefail

DATA_ROOT=${1:?usage: bash benchmarks/gpu_check.sh DATA_ROOT [SECONDS_PER_METHOD] [PEAK_TFLOPS]}
BUDGET=${2:-150}
PEAK=${3:-989}
PY=${PYTHON:-python3}
PRESET=${PRESET:-cifar10-vit-tiny}  # PRESET, DEVICE, EXTRA (--set ...) allow a CPU smoke test
DEVICE=${DEVICE:-cuda}
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
WORK=${WORK:-/tmp/djepa-gpu-check}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
export DJEPA_CACHE_DIR=$WORK/cache
mkdir -p "$WORK/runs"
START=$(date +%s)
stamp() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*"; }

stamp "environment and data"
$PY - "$DATA_ROOT" <<'EOF'
import sys, time, torch
from djepa_bench.data import load_dataset
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu",
      torch.cuda.get_device_name() if torch.cuda.is_available() else None)
t = time.perf_counter()
for split in ("train", "test"):
    s = load_dataset("cifar10", split, sys.argv[1])
    print(split, tuple(s.images.shape))
print(f"decode/cache {time.perf_counter() - t:.1f} s")
EOF

stamp "train-step benchmark (cifar10-vit-tiny)"
$PY benchmarks/train_step.py --preset "$PRESET" --device "$DEVICE" --warmup 20 --steps 100 \
    --peak-tflops "$PEAK" --json "$WORK/train_step.json" "${EXTRA_ARGS[@]}"
$PY - "$WORK/train_step.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
for m in ("ijepa", "djepa"):
    mfu = r[m]["mfu_percent"]
    print(f"SUMMARY step {m}: {r[m]['images_per_s']:.0f} images/s, {r[m]['step_ms']:.1f} ms/step, "
          f"MFU {'n/a' if mfu is None else f'{mfu:.1f}%'}")
print(f"SUMMARY step ratio djepa/ijepa: {r['ratio']:.3f}")
EOF

for METHOD in ijepa djepa; do
    # Epochs that fit the wall budget at ~75% of the benchmarked rate (augmentation, monitor,
    # checkpoints); warmup 10% of them.
    read -r EPOCHS WARMUP < <($PY - "$WORK/train_step.json" "$METHOD" "$BUDGET" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))[sys.argv[2]]
epochs = max(1, int(float(sys.argv[3]) * 0.75 * r["images_per_s"] / 50000))
print(epochs, round(max(0.5, 0.1 * epochs), 2))
EOF
)
    RUN=$WORK/runs/$PRESET-$METHOD
    rm -rf "$RUN"
    stamp "train $METHOD: $EPOCHS epochs (warmup $WARMUP) for a ~${BUDGET}s budget"
    timeout $(( BUDGET * 2 + 120 )) $PY -m djepa_bench train --preset "$PRESET" \
        --method "$METHOD" --epochs "$EPOCHS" --set optim.warmup_epochs="$WARMUP" \
        --set train.checkpoint_every=1000 --data-root "$DATA_ROOT" --device "$DEVICE" \
        --out "$RUN" "${EXTRA_ARGS[@]}" 2>"$WORK/train-$METHOD.err" \
        || { tail -20 "$WORK/train-$METHOD.err"; exit 1; }
done

stamp "kNN@20 of final target encoders vs random init"
$PY benchmarks/learning_check.py "$WORK/runs/$PRESET-ijepa" "$WORK/runs/$PRESET-djepa" \
    --data-root "$DATA_ROOT" --device "$DEVICE" | tee "$WORK/knn.txt"

for METHOD in ijepa djepa; do
    $PY - "$WORK/runs/$PRESET-$METHOD" "$WORK/knn.txt" <<'EOF'
import json, re, sys
from pathlib import Path
run = Path(sys.argv[1])
meta = json.loads((run / "meta.json").read_text())
rows = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
steps = [r for r in rows if r["kind"] == "step"]
ips = sorted(r["images_per_s"] for r in steps[1:] or steps)[len(steps[1:] or steps) // 2]
knn = re.search(rf"{run.name} .*?: ([0-9.]+)%", Path(sys.argv[2]).read_text()).group(1)
rand = re.search(r"random init .*?: ([0-9.]+)%", Path(sys.argv[2]).read_text()).group(1)
print(f"SUMMARY train {meta['method']}: {meta['step']} steps "
      f"({meta['step'] // meta['steps_per_epoch']} epochs) in {meta['wall_s']:.0f} s, "
      f"median {ips:.0f} images/s, kNN@20 {knn}% (random init {rand}%)")
EOF
done
stamp "done"

if [ -n "${OUT:-}" ]; then
    for METHOD in ijepa djepa; do
        mkdir -p "$OUT/$PRESET-$METHOD"
        cp "$WORK/runs/$PRESET-$METHOD"/{config.yaml,meta.json,log.jsonl} "$OUT/$PRESET-$METHOD/"
    done
    cp "$WORK/train_step.json" "$WORK/knn.txt" "$OUT/"
fi
