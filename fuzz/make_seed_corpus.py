#!/usr/bin/env python3
"""Writes the hand-made part of the seed corpus in fuzz/corpus/ (small valid files and a few
near-misses per reader). Files copied from real runs (a checkpoint's metadata, an integer
model, a stats.cbor) were added beside them by hand; see fuzz/README.md."""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def put(kind, name, data):
    d = os.path.join(HERE, "corpus", kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def idx_images(n, h, w):
    return struct.pack(">IIII", 2051, n, h, w) + bytes((i * 37) % 256 for i in range(n * h * w))


def idx_labels(labels):
    return struct.pack(">II", 2049, len(labels)) + bytes(labels)


def safetensors(tensors, metadata=None):
    header, blob = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + blob


# IDX: first byte = where the label file starts, as a fraction of the rest (see fuzz_idx.cpp).
img, lab = idx_images(3, 4, 5), idx_labels([1, 9, 0])
put("idx", "valid", bytes([round(255 * len(img) / (len(img) + len(lab)))]) + img + lab)
img2, lab2 = idx_images(2, 28, 28), idx_labels([3, 4])
put("idx", "valid28", bytes([round(255 * len(img2) / (len(img2) + len(lab2)))]) + img2 + lab2)
put("idx", "bad-label", bytes([128]) + idx_images(1, 2, 2) + idx_labels([12]))

put("cifar", "two-records", bytes([3]) + bytes(range(256)) * 12 + bytes([9]) + bytes(3072))
put("cifar", "short", bytes([1]) + bytes(100))

meta = {"format": "vkqat-checkpoint-1", "model": {"model": "resnet20", "width": 4, "in_channels": 1, "height": 28,
        "image_width": 28, "classes": 10}, "dataset": "fashion-mnist",
        "normalization": {"mean": [0.286, 0.286, 0.286], "std": [0.353, 0.353, 0.353]}, "wbits": 4, "abits": 4,
        "quant": {"quantizer": "cgpact", "wbits": 4, "abits": 4, "edge_bits": 8, "sat": True, "sat_conv": False,
                  "bits_config": {}}, "aux": False, "step": 16}
put("safetensors", "small", safetensors({"fc.bias": ("F32", [2], struct.pack("<2f", 0.5, -1)),
                                          "bn1.num_batches_tracked": ("I64", [], struct.pack("<q", 7))},
                                         {"vkqat": json.dumps(meta)}))
put("safetensors", "empty", safetensors({}))
put("safetensors", "f16", safetensors({"x": ("F16", [2, 2], bytes(8)), "y": ("U8", [3], b"abc")}))

put("bits_config", "valid", json.dumps({"conv1": {"wbits": 8}, "layer1.0.conv1": {"wbits": 2, "abits": 3}}))
put("bits_config", "empty", "{}")
put("bits_config", "bad", '{"fc": {"wbits": "two"}}')

put("model_config", "checkpoint-metadata", json.dumps(meta))
train = {"data": "fashion-mnist", "data_dir": "/usr/share/datasets/fashion-mnist", "model": meta["model"],
         "epochs": 1, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True,
         "warmup_epochs": 0, "seed": 0, "wbits": 4, "abits": 4, "quant": meta["quant"], "aux": True,
         "aux_weight": 1, "lp_weight": 1, "init": "", "train_limit": 0, "test_limit": 0, "log_every": 50,
         "keep_checkpoints": 1}
put("model_config", "train-config", json.dumps(train))
put("model_config", "quant-config", json.dumps(meta["quant"]))
