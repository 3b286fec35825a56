#!/usr/bin/env bash
# Reproduce the paper setting of `pan` on Occluded-Duke with ImageNet-pretrained weights (GPU advised).
# Usage: benchmarks/reproduce_pan.sh DATA_ROOT PRETRAINED_FILE [extra key=value overrides]
#   PRETRAINED_FILE: torchvision resnet50-*.pth (OSNet: configs/pan/occluded_duke_osnet.yaml with osnet_x1_0_imagenet.pth)
# Paper (Occluded-Duke): R1 62.5 / mAP 52.6 (OSNet 67.2 / 57.0)
set -euo pipefail
data=${1:?data root holding Occluded_Duke/}; weights=${2:?ImageNet checkpoint file}; shift 2
out=runs/reproduce/pan
occreid train --config configs/pan/occluded_duke.yaml data.root="$data" model.pretrained_path="$weights" run.out="$out" "$@"
occreid eval --checkpoint "$out/last.pt" --json "$out/occluded_duke.json"
echo "paper: R1 62.5 / mAP 52.6 (OSNet 67.2 / 57.0)"
