#!/usr/bin/env bash
# Reproduce the paper setting of `sgsfa` on Occluded-Duke with ImageNet-pretrained weights (GPU advised).
# Usage: benchmarks/reproduce_sgsfa.sh DATA_ROOT PRETRAINED_FILE [extra key=value overrides]
#   PRETRAINED_FILE: torchvision resnet50-*.pth
# Paper (Occluded-Duke): R1 62.3 / mAP 47.4 (part labels: occreid labels make ... then data.labels_root=DIR)
set -euo pipefail
data=${1:?data root holding Occluded_Duke/}; weights=${2:?ImageNet checkpoint file}; shift 2
out=runs/reproduce/sgsfa
occreid train --config configs/sgsfa/occluded_duke.yaml data.root="$data" model.pretrained_path="$weights" run.out="$out" "$@"
occreid eval --checkpoint "$out/last.pt" --json "$out/occluded_duke.json"
echo "paper: R1 62.3 / mAP 47.4 (part labels: occreid labels make ... then data.labels_root=DIR)"
