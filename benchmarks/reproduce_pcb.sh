#!/usr/bin/env bash
# Reproduce the paper setting of `pcb` on Occluded-Duke with ImageNet-pretrained weights (GPU advised).
# Usage: benchmarks/reproduce_pcb.sh DATA_ROOT PRETRAINED_FILE [extra key=value overrides]
#   PRETRAINED_FILE: torchvision resnet50-*.pth
# Paper (Occluded-Duke): R1 42.6 / mAP 33.7 (as reported in the PAN / OCNet papers)
set -euo pipefail
data=${1:?data root holding Occluded_Duke/}; weights=${2:?ImageNet checkpoint file}; shift 2
out=runs/reproduce/pcb
occreid train --config configs/pcb/occluded_duke.yaml data.root="$data" model.pretrained_path="$weights" run.out="$out" "$@"
occreid eval --checkpoint "$out/last.pt" --json "$out/occluded_duke.json"
echo "paper: R1 42.6 / mAP 33.7 (as reported in the PAN / OCNet papers)"
