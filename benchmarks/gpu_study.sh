#!/usr/bin/env bash
# GPU study in one call (~9 minutes on one H200): cifar10-vit-tiny (ViT-T/4, bf16,
# GPU-resident CIFAR-10), I-JEPA and D-JEPA x SEEDS seeds, every evaluation protocol on a
# quick evaluation set, the raw-pixel and random-init floors, and one report.
#
#   1. environment and data (CIFAR-10 decoded once into $WORK/cache);
#   2. the training rate of each method: a short benchmarks/train_step.py run (MEASURE=1,
#      the default) or RATES="IJEPA DJEPA" images/s given by hand;
#   3. epochs sized from that rate so that all runs fit TRAIN_FRACTION of BUDGET_S (the
#      same epoch count for both methods: matched settings, not matched time);
#   4. training, evaluation (--protocol all on the GPU), floors, `djepa-bench report`;
#   5. SUMMARY lines: kNN@20 of every run against the pixel and random floors.
#
# Everything light (configs, meta, logs, result records, the report) is written under OUT;
# checkpoints stay under $WORK. Rerunning with the same OUT and WORK continues: finished
# runs and evaluations are kept.
#
# usage: bash benchmarks/gpu_study.sh DATA_ROOT OUT [BUDGET_S=540]
#   env: DEVICE=cuda|cpu   cpu is a smoke test of the same pipeline (a shrunken ViT, 2,000
#                          training images, small evaluation subsets; a minute or two)
#        SEEDS=2  PRESET=cifar10-vit-tiny  TRAIN_FRACTION=0.5  RATES="7500 6000"
#        MEASURE=1  EPOCHS=N (skip the sizing)  SETS="--set k=v ..." (extra training keys)
#        PYTHON=python3  WORK=/tmp/djepa-gpu-study
set -euo pipefail

DATA_ROOT=${1:?usage: bash benchmarks/gpu_study.sh DATA_ROOT OUT [BUDGET_S]}
OUT=${2:?usage: bash benchmarks/gpu_study.sh DATA_ROOT OUT [BUDGET_S]}
BUDGET=${3:-540}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-cifar10-vit-tiny}
SEEDS=${SEEDS:-2}
TRAIN_FRACTION=${TRAIN_FRACTION:-0.5}
MEASURE=${MEASURE:-1}
RATES=${RATES:-7500 6000}  # H200, docs/results/cifar10-vit-tiny-h200 (batch 512, eager)
WORK=${WORK:-/tmp/djepa-gpu-study}
export DJEPA_CACHE_DIR=${DJEPA_CACHE_DIR:-$WORK/cache} PYTHONUNBUFFERED=1
read -r -a SETS_ARGS <<< "${SETS:-}"
RUNS=$WORK/runs
mkdir -p "$RUNS" "$OUT/runs" "$OUT/floors"
START=$(date +%s)
stamp() { echo "[gpu_study +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/timings.txt"; }

# The stage folders install as djepa_bench.train/.eval_protocols/.reports (package-dir):
# a bare PYTHONPATH=. does not find them, so install the checkout (no dependencies).
if ! $PY -c "import djepa_bench.train, djepa_bench.eval_protocols, djepa_bench.reports" 2>/dev/null
then
    $PY -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
fi

if [ "$DEVICE" = cpu ]; then
    # Smoke test: the same stages on a model small enough for 2 CPU cores.
    SMOKE=(--set model.embed_dim=32 --set model.depth=1 --set model.num_heads=2
           --set model.patch_size=8 --set model.predictor_dim=32 --set model.predictor_depth=1
           --set model.predictor_heads=2)
    TRAIN_SMOKE=(--set data.train_subset=2000 --set optim.batch_size=100
                 --set train.monitor_size=500 --set train.cpu_threads=2)
    EVAL_SMOKE=(--set eval.robustness.test_subset=200 --set eval.robustness.corruptions=noise
                --set 'eval.robustness.severities=[3]' --set eval.linear.epochs=5
                --set eval.lowshot.trials=1 --set 'eval.lowshot.shots=[1,5]'
                --set eval.denoising.num_images=100 --set eval.denoising.sampling_images=16
                --set 'eval.denoising.steps=[1,5]' --set eval.denoising.samples=2
                --set eval.representation.num_images=2000)
    IMAGES=2000 BENCH=(--batch 100 --warmup 1 --steps 3 --threads 2)
else
    SMOKE=() TRAIN_SMOKE=() EVAL_SMOKE=()
    IMAGES=50000 BENCH=(--warmup 10 --steps 30)
fi
# The quick evaluation preset (recorded as quick+overrides: robustness on 2,000 test images).
EVAL_SET=(--eval-preset quick --set eval.robustness.test_subset=2000 "${EVAL_SMOKE[@]}")

stamp "environment and data (device $DEVICE, budget ${BUDGET}s, $SEEDS seeds)"
$PY - "$DATA_ROOT" <<'EOF' | tee "$OUT/environment.txt"
import sys, time, torch
from djepa_bench.data import load_dataset
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu",
      torch.cuda.get_device_name() if torch.cuda.is_available() else None)
t = time.perf_counter()
for split in ("train", "test"):
    print(split, tuple(load_dataset("cifar10", split, sys.argv[1]).images.shape))
print(f"decode/cache {time.perf_counter() - t:.1f} s")
EOF

if [ -z "${EPOCHS:-}" ]; then
    if [ "$MEASURE" = 1 ]; then
        stamp "training rate (benchmarks/train_step.py)"
        $PY benchmarks/train_step.py --preset "$PRESET" --device "$DEVICE" "${BENCH[@]}" \
            --json "$OUT/train_step.json" "${SMOKE[@]}" "${SETS_ARGS[@]}" | tail -n 4
        RATES=$($PY -c "import json,sys; r=json.load(open(sys.argv[1]))
print(r['ijepa']['images_per_s'], r['djepa']['images_per_s'])" "$OUT/train_step.json")
    fi
    # Per run ~15 s of start-up and ~80% of the benchmarked rate (monitor, checkpoints).
    EPOCHS=$($PY - "$BUDGET" "$TRAIN_FRACTION" "$SEEDS" "$IMAGES" $RATES <<'EOF'
import sys
budget, fraction, seeds, images, r_ij, r_dj = (float(a) for a in sys.argv[1:7])
train_s = budget * fraction - 2 * seeds * 15
per_epoch = seeds * (images / (0.8 * r_ij) + images / (0.8 * r_dj))
print(max(1, int(train_s / per_epoch)))
EOF
)
    stamp "rates $RATES images/s: $EPOCHS epochs per run"
fi
WARMUP=$($PY -c "print(round(max(0.5, 0.1 * $EPOCHS), 2))")

for SEED in $(seq 0 $(( SEEDS - 1 ))); do
    for METHOD in ijepa djepa; do
        RUN=$RUNS/$METHOD-s$SEED
        if [ -f "$RUN/meta.json" ] && grep -q '"status": "finished"' "$RUN/meta.json"; then
            stamp "train $METHOD seed $SEED: already trained"
            continue
        fi
        rm -rf "$RUN"
        stamp "train $METHOD seed $SEED: $EPOCHS epochs (warmup $WARMUP)"
        $PY -m djepa_bench train --preset "$PRESET" --method "$METHOD" --seed "$SEED" \
            --epochs "$EPOCHS" --set optim.warmup_epochs="$WARMUP" \
            --set train.checkpoint_every=1000 --data-root "$DATA_ROOT" --device "$DEVICE" \
            --out "$RUN" "${SMOKE[@]}" "${TRAIN_SMOKE[@]}" "${SETS_ARGS[@]}" \
            2>"$OUT/runs/train-$METHOD-s$SEED.err" \
            || { tail -20 "$OUT/runs/train-$METHOD-s$SEED.err"; exit 1; }
        tail -n 2 "$OUT/runs/train-$METHOD-s$SEED.err"
    done
done

evaluate() {  # evaluate LABEL RESULTS_DIR ARGS...: every protocol, unless already done
    local label=$1 results=$2
    shift 2
    if [ -f "$results/.complete" ]; then stamp "eval $label: already evaluated"; return; fi
    rm -f "$results"/*.jsonl
    stamp "eval $label"
    $PY -m djepa_bench eval --protocol all --device "$DEVICE" --data-root "$DATA_ROOT" \
        "$@" "${EVAL_SET[@]}" > "$OUT/eval-$label.log" 2>&1 \
        || { tail -20 "$OUT/eval-$label.log"; exit 1; }
    touch "$results/.complete"
}

for SEED in $(seq 0 $(( SEEDS - 1 ))); do
    for METHOD in ijepa djepa; do
        evaluate "$METHOD-s$SEED" "$RUNS/$METHOD-s$SEED/results" --ckpt "$RUNS/$METHOD-s$SEED"
        mkdir -p "$OUT/runs/$METHOD-s$SEED"
        cp -r "$RUNS/$METHOD-s$SEED"/{config.yaml,meta.json,log.jsonl,results} \
            "$OUT/runs/$METHOD-s$SEED/"
    done
done
# The floors: the preset's encoder shape (random init, seed 0) and standardised pixels.
evaluate pixels "$OUT/floors/pixels" --model pixels --dataset cifar10 --out "$OUT/floors/pixels"
evaluate random "$OUT/floors/random" --model random:tiny --dataset cifar10 \
    --set model.patch_size=4 "${SMOKE[@]}" --out "$OUT/floors/random"

stamp "report"
$PY -m djepa_bench report "$OUT/runs" "$OUT/floors" --out "$OUT/report" --baseline ijepa \
    > "$OUT/report.log" 2>&1 || { tail -20 "$OUT/report.log"; exit 1; }

$PY - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
def knn20(folder: Path) -> float | None:
    for line in (folder / "knn.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["metric"] == "top1" and r["params"].get("k") == 20:
            return r["value"]
    return None
pixels, rand = knn20(out / "floors/pixels"), knn20(out / "floors/random")
print(f"SUMMARY floors: kNN@20 raw pixels {pixels:.2f}, random init {rand:.2f}")
for run in sorted((out / "runs").iterdir()):
    if not run.is_dir():
        continue
    meta = json.loads((run / "meta.json").read_text())
    acc = knn20(run / "results")
    print(f"SUMMARY {run.name}: {meta['step']} steps in {meta['wall_s']:.0f} s, kNN@20 "
          f"{acc:.2f} ({acc - pixels:+.2f} vs pixels, {acc - rand:+.2f} vs random)")
EOF
stamp "done: $OUT/report/report.md"
