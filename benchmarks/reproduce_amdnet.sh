#!/usr/bin/env bash
# Reproduce the paper setting of `amdnet` on Occluded-Duke with ImageNet-pretrained weights (GPU advised).
# Usage: benchmarks/reproduce_amdnet.sh DATA_ROOT PRETRAINED_FILE [extra key=value overrides]
#   PRETRAINED_FILE: hrnetv2_w32_imagenet_pretrained.pth (HRNet-Image-Classification) or timm hrnet_w32
# Paper (Occluded-Duke): R1 75.8 / mAP 63.3 (part labels: occreid labels make ... then data.labels_root=DIR)
set -euo pipefail
data=${1:?data root holding Occluded_Duke/}; weights=${2:?ImageNet checkpoint file}; shift 2
out=runs/reproduce/amdnet
occreid train --config configs/amdnet/occluded_duke.yaml data.root="$data" model.pretrained_path="$weights" run.out="$out" "$@"
occreid eval --checkpoint "$out/last.pt" --json "$out/occluded_duke.json"
echo "paper: R1 75.8 / mAP 63.3 (part labels: occreid labels make ... then data.labels_root=DIR)"
