#!/usr/bin/env bash
# Reproduce the paper setting of `bot` on Occluded-Duke with ImageNet-pretrained weights (GPU advised).
# Usage: benchmarks/reproduce_bot.sh DATA_ROOT PRETRAINED_FILE [extra key=value overrides]
#   PRETRAINED_FILE: torchvision resnet50-*.pth
# Paper (Occluded-Duke): R1 47.7 / mAP 41.3 (as reported in the OCNet paper)
set -euo pipefail
data=${1:?data root holding Occluded_Duke/}; weights=${2:?ImageNet checkpoint file}; shift 2
out=runs/reproduce/bot
occreid train --config configs/bot/occluded_duke.yaml data.root="$data" model.pretrained_path="$weights" run.out="$out" "$@"
occreid eval --checkpoint "$out/last.pt" --json "$out/occluded_duke.json"
echo "paper: R1 47.7 / mAP 41.3 (as reported in the OCNet paper)"
