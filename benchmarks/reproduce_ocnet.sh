#!/usr/bin/env bash
# Reproduce the paper setting of `ocnet` on Occluded-Duke with ImageNet-pretrained weights (GPU advised).
# Usage: benchmarks/reproduce_ocnet.sh DATA_ROOT PRETRAINED_FILE [extra key=value overrides]
#   PRETRAINED_FILE: torchvision resnet50-*.pth (IBN-a: configs/ocnet/ibn/occluded_duke.yaml with resnet50_ibn_a-*.pth)
# Paper (Occluded-Duke): R1 59.9 / mAP 49.7 (R50-IBN-a 64.3 / 54.4)
set -euo pipefail
data=${1:?data root holding Occluded_Duke/}; weights=${2:?ImageNet checkpoint file}; shift 2
out=runs/reproduce/ocnet
occreid train --config configs/ocnet/occluded_duke.yaml data.root="$data" model.pretrained_path="$weights" run.out="$out" "$@"
occreid eval --checkpoint "$out/last.pt" --json "$out/occluded_duke.json"
echo "paper: R1 59.9 / mAP 49.7 (R50-IBN-a 64.3 / 54.4)"
