#!/bin/sh
# Writes Fashion-MNIST (Debian's dataset-fashion-mnist) out as a PNG image folder and a
# JPEG one, then trains the same ResNet-20 on the IDX files, the PNG folder and the JPEG
# folder (same seed, no augmentation, Fashion-MNIST's normalization) and prints the three
# test accuracies. The README's "Image folders" section reports its output.
#   scripts/fashion_mnist_folders.sh [VKQAT] [WORKDIR] [TRAIN_LIMIT]
set -eu
VKQAT=${1:-./build/vkqat}
WORK=${2:-runs/fmnist-folders}
LIMIT=${3:-0}
mkdir -p "$WORK"
[ -d "$WORK/png/train" ] || "$VKQAT" data export fashion-mnist --out "$WORK/png" --format png
[ -d "$WORK/jpg/train" ] || "$VKQAT" data export fashion-mnist --out "$WORK/jpg" --format jpg --quality 90
COMMON="--model resnet20 --width 16 --epochs 1 --batch-size 128 --lr 0.1 --seed 0 --augment none --train-limit $LIMIT"
NORM="--image-size 28 --mean 0.2860 --std 0.3530"
for run in idx png jpg; do
  rm -rf "$WORK/run-$run"
  case $run in
    idx) "$VKQAT" train --data fashion-mnist $COMMON --out "$WORK/run-$run" ;;
    # stb_image_write stores gray pictures as 3-component JPEGs: --in-channels 1 keeps luma only.
    *) "$VKQAT" train --data folder --data-dir "$WORK/$run" --in-channels 1 $NORM $COMMON --out "$WORK/run-$run" ;;
  esac
done
for run in idx png jpg; do
  printf '%s: ' "$run"
  python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print('test_acc %.4f  train %.0f images/s' % (s['test_acc'], s['train_images_per_s']))" "$WORK/run-$run/summary.json"
done
