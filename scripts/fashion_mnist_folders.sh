#!/bin/sh
# Writes Fashion-MNIST (Debian's dataset-fashion-mnist) out as a PNG image folder and a
# JPEG one, then trains the same ResNet-20 on the IDX files, the PNG folder and the JPEG
# folder (same seed, no augmentation, Fashion-MNIST's normalization) and prints the three
# test accuracies, for each seed in SEEDS (default 0), then each source's mean and spread.
# The README's "Image folders" section reports its output.
#   [SEEDS="0 1 2"] scripts/fashion_mnist_folders.sh [VKQAT] [WORKDIR] [TRAIN_LIMIT]
set -eu
VKQAT=${1:-./build/vkqat}
WORK=${2:-runs/fmnist-folders}
LIMIT=${3:-0}
SEEDS=${SEEDS:-0}
mkdir -p "$WORK"
[ -d "$WORK/png/train" ] || "$VKQAT" data export fashion-mnist --out "$WORK/png" --format png
[ -d "$WORK/jpg/train" ] || "$VKQAT" data export fashion-mnist --out "$WORK/jpg" --format jpg --quality 90
COMMON="--model resnet20 --width 16 --epochs 1 --batch-size 128 --lr 0.1 --augment none --train-limit $LIMIT"
NORM="--image-size 28 --mean 0.2860 --std 0.3530"
for seed in $SEEDS; do
  for run in idx png jpg; do
    dir="$WORK/run-$run-s$seed"
    rm -rf "$dir"
    case $run in
      idx) "$VKQAT" train --data fashion-mnist $COMMON --seed "$seed" --out "$dir" ;;
      # stb_image_write stores gray pictures as 3-component JPEGs: --in-channels 1 keeps luma only.
      *) "$VKQAT" train --data folder --data-dir "$WORK/$run" --in-channels 1 $NORM $COMMON --seed "$seed" --out "$dir" ;;
    esac
  done
done
python3 - "$WORK" $SEEDS <<'PY'
import json, statistics, sys
work, seeds = sys.argv[1], sys.argv[2:]
for run in ("idx", "png", "jpg"):
    acc = []
    for seed in seeds:
        s = json.load(open(f"{work}/run-{run}-s{seed}/summary.json"))
        acc.append(100 * s["test_acc"])
        print(f"{run} seed {seed}: test_acc {acc[-1]:.2f}%  train {s['train_images_per_s']:.0f} images/s")
    spread = f", sd {statistics.stdev(acc):.2f}" if len(acc) > 1 else ""
    print(f"{run}: mean {statistics.mean(acc):.2f}%{spread} over seeds {' '.join(seeds)}")
PY
