#!/usr/bin/env bash
# Draws the figures of the README and docs/plots.md again with the tool itself, from the built-in scenes and the
# quickstart's probe. The featurizer has random weights: the figures show what each command draws, not what DINOv2
# can do.
set -euo pipefail
cd "$(dirname "$0")/../.."
# The README's setup puts isegprobe in .venv; an isegprobe installed otherwise is taken from PATH.
isegprobe=.venv/bin/isegprobe
[ -x "$isegprobe" ] || isegprobe=$(command -v isegprobe) || { echo "isegprobe is not installed" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$isegprobe" quickstart --out "$work/qs"
store="$work/qs/cache/vit_small_patch14_dinov2-builtin-test-224.zarr"
"$isegprobe" plot iou-vs-clicks "$work/qs/results" --labels "quickstart probe (random-weight ViT-S/14)" \
    --out "$work/iou_vs_clicks.png"
cp "$work/iou_vs_clicks.png" docs/figures/iou_vs_clicks.png
"$isegprobe" plot features --store "$store" --item 3 --upsamplers bilinear,bicubic \
    --out docs/figures/features.png
"$isegprobe" plot predictions "$work/qs/results" --object test_003_2 --out docs/figures/predictions.jpg
