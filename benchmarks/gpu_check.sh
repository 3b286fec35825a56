#!/usr/bin/env bash
# GPU check, prepared for the day a GPU machine is lent (about 8 minutes; every step has its own timeout):
#   1. unpack Occluded-Duke carried in parts (../shared/tools/pack-dataset: part-NN.tar, extracted in order);
#   2. training throughput of bot and pabreid at 256x128 (ResNet-50): fp32, AMP bf16, bf16 + channels-last,
#      bf16 + channels-last + torch.compile, batch 64, in one process (benchmarks/gpu_throughput.py --only steps,
#      the step of benchmarks/train_speed.py). The whole gpu_throughput.py run (issue #35: every method, end to
#      end on Market-1501) is a separate call of its own: each script fills most of a 10-minute device call;
#   3. a short bot on the pretrained protocol (configs/protocols/pretrained_occduke/bot.yaml, train.max_iters);
#   4. a full `occreid eval` of it, phase by phase, with the extraction throughput (benchmarks/eval_phases.py).
# Writes OUT/gpu_check.md (the table), OUT/log.txt (every command's output) and OUT/data, OUT/bot_short.
#
# Usage: benchmarks/gpu_check.sh [--parts DIR | --root DIR] [--out DIR] [--dry-run]
#   --parts DIR  folder of part-NN.tar files holding Occluded_Duke/ (unpacked into OUT/data)
#   --root DIR   data root that already holds Occluded_Duke/ (default: $OCCREID_DATA)
#   --dry-run    CPU, tiny sizes, a synthetic set from `occreid data synth`: checks the script (CI)
# Environment: PYTHON (default: python), TRAIN_ITERS (default 300), SPEED_ITERS (default 20).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=runs/gpu_check; PARTS=""; ROOT=${OCCREID_DATA:-}; DRY=0
while [ $# -gt 0 ]; do
  case $1 in
    --parts) PARTS=$2; shift 2 ;;
    --root) ROOT=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    *) echo "unknown argument: $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
LOG=$OUT/log.txt; ROWS=$OUT/rows.md; : > "$LOG"; : > "$ROWS"
START=$(date +%s)

# row STEP SETTING RESULT SECONDS
row() { echo "| $1 | $2 | $3 | $4 |" >> "$ROWS"; }
# timed LIMIT_S COMMAND...: run with a timeout (x5 in a dry run: slow CPUs), output to the log; sets SECS, RC
timed() {
  local limit=$1; shift
  [ $DRY = 1 ] && limit=$((limit * 5))
  echo "\$ $*" >> "$LOG"
  local t0; t0=$(date +%s.%N)
  timeout "$limit" "$@" > "$OUT/last.txt" 2>&1; RC=$?
  cat "$OUT/last.txt" >> "$LOG"
  SECS=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
}
# why: a short reason for a failed step (timeout or the last line of its output)
why() { if [ "$RC" = 124 ]; then echo "timed out"; else tail -n 1 "$OUT/last.txt" | tr '|' '/' | cut -c1-120; fi; }
# unpack PARTS_DIR DEST DATASET_FOLDER: extract part-*.tar in order into DEST, one table row
unpack() {
  mkdir -p "$2"
  timed 90 bash -c "for p in \"$1\"/part-*.tar; do tar xf \"\$p\" -C \"$2\" || exit 1; done"
  local n; n=$(find "$1" -maxdepth 1 -name 'part-*.tar' | wc -l)
  if [ "$RC" = 0 ] && [ -d "$2/$3" ]; then row unpack "$n parts" "ok, $(find "$2/$3" -name '*.jpg' | wc -l) images" "$SECS"
  else RC=1; row unpack "$n parts" "failed: $(why)" "$SECS"; fi
}

if [ $DRY = 1 ]; then
  DEVICE=cpu; ITERS=1; WARMUP=1; TRAIN_ITERS=2; AMP_TAG="dry run, CPU"
  SIZE=(--set data.height=64 --set data.width=32 --set model.backbone=resnet18)
  STEP_VARIANTS=fp32,bf16+channels-last; STEP_LIMIT=60
  TRAIN_SET=(data.dataset=synthetic "data.root=$OUT/data/synthetic" data.height=64 data.width=32 data.pad=4
             model.pretrained_path=null data.ids_per_batch=4 data.instances_per_id=2 data.workers=0
             train.device=cpu run.progress=false)
  timed 120 "$PY" -m occreid data synth --out "$OUT/made/synthetic" --ids 8 --cams 2 --workers 1 --overwrite
  if [ "$RC" = 0 ]; then row data "synthetic, 8 ids x 2 cams" ok "$SECS"; else row data synthetic "failed: $(why)" "$SECS"; fi
  # carried in two parts, as pack-dataset writes them (tar files of paths below the dataset's parent)
  rm -rf "$OUT/parts" "$OUT/data"; mkdir -p "$OUT/parts"
  (cd "$OUT/made" && find synthetic -type f | sort > ../files.txt)
  half=$(( $(wc -l < "$OUT/files.txt") / 2 ))
  head -n "$half" "$OUT/files.txt" > "$OUT/files0.txt"; tail -n +"$((half + 1))" "$OUT/files.txt" > "$OUT/files1.txt"
  tar cf "$OUT/parts/part-00.tar" -C "$OUT/made" -T "$OUT/files0.txt"
  tar cf "$OUT/parts/part-01.tar" -C "$OUT/made" -T "$OUT/files1.txt"
  rm -f "$OUT"/files*.txt
  unpack "$OUT/parts" "$OUT/data" synthetic
  EVAL_ARGS=(--dataset synthetic --root "$OUT/data/synthetic" data.workers=0)
else
  DEVICE=cuda; ITERS=${SPEED_ITERS:-20}; WARMUP=5; TRAIN_ITERS=${TRAIN_ITERS:-300}; AMP_TAG=GPU
  SIZE=(--set data.height=256 --set data.width=128)
  STEP_VARIANTS=fp32,bf16,bf16+channels-last,bf16+channels-last+compile; STEP_LIMIT=330
  if [ -n "$PARTS" ]; then
    ROOT=$OUT/data
    unpack "$PARTS" "$ROOT" Occluded_Duke
  fi
  [ -d "$ROOT/Occluded_Duke" ] || { echo "no Occluded_Duke under '$ROOT': give --parts or --root" >&2; exit 2; }
  TRAIN_SET=("data.root=$ROOT" data.workers=8 train.device=cuda run.progress=false)
  EVAL_ARGS=(--dataset occluded_duke --root "$ROOT" data.workers=8)
fi
GPU=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')" 2>&1 | tail -n 1)

# one process measures every variant of both methods (benchmarks/gpu_throughput.py --only steps, which times
# benchmarks/train_speed.py's step); its rows are read back from its JSON
timed "$STEP_LIMIT" "$PY" benchmarks/gpu_throughput.py --only steps --methods bot,pabreid --variants "$STEP_VARIANTS" \
  "${SIZE[@]}" --device $DEVICE --iters $ITERS --warmup $WARMUP --out "$OUT/throughput"
STEP_SECS=$SECS
for name in ${STEP_VARIANTS//,/ }; do
  for m in bot pabreid; do
    ips=$("$PY" -c 'import json, sys
rows = json.load(open(sys.argv[1])).get("steps", [])
print(next((r["img_s"] for r in rows if r["method"] == sys.argv[2] and r["variant"] == sys.argv[3]), ""))' \
      "$OUT/throughput/gpu_throughput.json" "$m" "$name" 2>/dev/null)
    if [ -n "$ips" ]; then row "train throughput" "$m, $name" "$ips img/s" "$STEP_SECS"
    else row "train throughput" "$m, $name" "failed: $(why)" "$STEP_SECS"; fi
  done
done

RUN=$OUT/bot_short
rm -rf "$RUN"
timed 120 "$PY" -m occreid train --config configs/protocols/pretrained_occduke/bot.yaml --no-eval \
  "${TRAIN_SET[@]}" "train.max_iters=$TRAIN_ITERS" "run.out=$RUN"
note="pretrained protocol, $TRAIN_ITERS iterations"
if [ "$RC" != 0 ] && grep -q "pretrained_path" "$OUT/last.txt"; then  # no packaged ImageNet file here
  rm -rf "$RUN"
  timed 120 "$PY" -m occreid train --config configs/protocols/pretrained_occduke/bot.yaml --no-eval \
    "${TRAIN_SET[@]}" "train.max_iters=$TRAIN_ITERS" "run.out=$RUN" model.pretrained_path=null
  note="$note, from scratch (no ImageNet file)"
fi
if [ "$RC" = 0 ]; then
  row "short training" "bot, $note" "ok, $(awk -v n="$TRAIN_ITERS" -v s="$SECS" 'BEGIN { printf "%.2f it/s incl. setup", n / s }')" "$SECS"
  timed 150 "$PY" benchmarks/eval_phases.py --checkpoint "$RUN/last.pt" "${EVAL_ARGS[@]}"
  if [ "$RC" = 0 ]; then
    row "eval" "bot_short, full query x gallery" "$(grep -o 'mAP [0-9.]*, rank-1 [0-9.]*' "$OUT/last.txt" | head -n 1)" "$SECS"
    row "extraction throughput" "eval, $DEVICE" "$(grep -o '= [0-9.]* img/s' "$OUT/last.txt" | head -n 1 | tr -d '=')" "$SECS"
    cp "$OUT/last.txt" "$OUT/eval_phases.md"
  else row eval bot_short "failed: $(why)" "$SECS"; fi
else
  row "short training" "bot, $note" "failed: $(why)" "$SECS"
fi

{
  echo "# GPU check ($AMP_TAG): $GPU"
  echo
  echo "$(date -u +%Y-%m-%d), torch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null), \
total $(( $(date +%s) - START )) s. Commands and their output: log.txt; eval phases: eval_phases.md."
  echo
  echo "| step | setting | result | seconds |"
  echo "|---|---|---|---|"
  cat "$ROWS"
} > "$OUT/gpu_check.md"
rm -f "$ROWS" "$OUT/last.txt"
cat "$OUT/gpu_check.md"
