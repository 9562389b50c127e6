#!/usr/bin/python3
"""PyTorch parity fixtures for vkqat's torchvision models (tests/test_torchvision_parity.cpp).

Builds torchvision's ResNet-18, ResNet-50 and MobileNetV2 for 1-channel 28x28 images and 10
classes at reduced widths (the ResNets through torchvision's own ResNet class with the first
stage's width as a parameter, so every state-dict name is torchvision's; MobileNetV2 with
torchvision's width_mult), trains each for a few dozen SGD steps on Fashion-MNIST (so the
batch-norm running statistics are not the trivial 0/1), and writes to OUT_DIR:

  NAME.safetensors        the model's state_dict() (F32 + I64 num_batches_tracked, no vkqat
                          metadata: a plain PyTorch file)
  NAME_batch.safetensors  "inputs" [16,1,28,28] (normalized test images 0..15) and PyTorch's
                          eval-mode "logits" [16,10]
  state_dicts.json        torchvision's full-size resnet18/34/50 and mobilenet_v2 state-dict
                          names and shapes (3 channels, 1000 classes), in order
  fixtures.json           per model: vkqat's --model/--width/--width-mult, and PyTorch's
                          correct count on the first SUBSET Fashion-MNIST test images

Needs Debian's python3-torch and python3-torchvision (torch 1.13, torchvision 0.14); run with
/usr/bin/python3. The tests need neither: the files are committed.

  /usr/bin/python3 scripts/torchvision_fixtures.py [--out tests/data/torchvision]
  /usr/bin/python3 scripts/torchvision_fixtures.py --load-back CKPT --model resnet18 --width 8
      (loads a vkqat checkpoint into the PyTorch model with load_state_dict(strict=True))
"""
import argparse
import gzip
import json
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torchvision
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

FMNIST = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530  # vkqat's Fashion-MNIST normalization (DESIGN.md)
SUBSET = 1000


class WidthResNet(ResNet):
    """torchvision.models.ResNet with `width` first-stage channels instead of the hard-coded
    64: the same module tree, so the same state-dict names and order."""

    def __init__(self, block, layers, width, in_channels, classes):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def build(model, width=0, width_mult=1.0, in_channels=1, classes=10):
    if model == "resnet18":
        return WidthResNet(BasicBlock, [2, 2, 2, 2], width, in_channels, classes)
    if model == "resnet34":
        return WidthResNet(BasicBlock, [3, 4, 6, 3], width, in_channels, classes)
    if model == "resnet50":
        return WidthResNet(Bottleneck, [3, 4, 6, 3], width, in_channels, classes)
    if model == "mobilenet-v2":
        m = torchvision.models.mobilenet_v2(width_mult=width_mult, num_classes=classes)
        old = m.features[0][0]
        m.features[0][0] = nn.Conv2d(in_channels, old.out_channels, 3, 2, 1, bias=False)
        return m
    raise SystemExit(f"--model {model}: the script builds resnet18, resnet34, resnet50, mobilenet-v2")


def read_idx(prefix):
    with gzip.open(prefix + "-images-idx3-ubyte.gz") as f:
        _, n, h, w = struct.unpack(">IIII", f.read(16))
        x = np.frombuffer(f.read(n * h * w), dtype=np.uint8).reshape(n, 1, h, w)
    with gzip.open(prefix + "-labels-idx1-ubyte.gz") as f:
        f.read(8)
        y = np.frombuffer(f.read(n), dtype=np.uint8)
    x = (x.astype(np.float32) / np.float32(255) - np.float32(MEAN)) / np.float32(STD)
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))


DTYPES = {torch.float32: "F32", torch.int64: "I64"}


def save_safetensors(path, tensors):
    """A safetensors file (no python3-safetensors in Debian 12): header JSON padded with spaces
    to a multiple of 8, then the tensors back to back, little-endian."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():
        b = t.detach().contiguous().cpu().numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    np_types = {"F32": np.float32, "I64": np.int64}
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data[a:b], dtype=np_types[v["dtype"]]).reshape(v["shape"]).copy())
    return out


def train_briefly(m, x, y, steps, seed):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    m.train()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (64,), generator=g)
        loss = nn.functional.cross_entropy(m(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    return float(loss)


# vkqat's --model / --width / --width-mult of each fixture; reduced widths keep the files small.
FIXTURES = [
    {"name": "resnet18", "model": "resnet18", "width": 8},
    {"name": "resnet50", "model": "resnet50", "width": 4},
    {"name": "mobilenet_v2", "model": "mobilenet-v2", "width_mult": 0.25},
]


def make_fixtures(out, steps):
    torch.manual_seed(0)
    torch.set_num_threads(2)
    xtr, ytr = read_idx(FMNIST + "/train")
    xte, yte = read_idx(FMNIST + "/t10k")
    os.makedirs(out, exist_ok=True)
    manifest = {"subset": SUBSET, "normalization": {"mean": MEAN, "std": STD},
                "torch": torch.__version__, "torchvision": torchvision.__version__, "steps": steps, "models": []}
    for i, fx in enumerate(FIXTURES):
        m = build(fx["model"], fx.get("width", 0), fx.get("width_mult", 1.0))
        loss = train_briefly(m, xtr, ytr, steps, seed=i)
        with torch.no_grad():
            logits = m(xte[:16])
            pred = torch.cat([m(xte[k:k + 250]).argmax(1) for k in range(0, SUBSET, 250)])
        correct = int((pred == yte[:SUBSET]).sum())
        save_safetensors(os.path.join(out, fx["name"] + ".safetensors"), m.state_dict())
        save_safetensors(os.path.join(out, fx["name"] + "_batch.safetensors"), {"inputs": xte[:16], "logits": logits})
        manifest["models"].append(dict(fx, pytorch_correct=correct, last_train_loss=round(loss, 4)))
        print(f"{fx['name']}: {sum(p.numel() for p in m.parameters())} parameters, train loss {loss:.3f}, "
              f"{correct}/{SUBSET} correct on the first test images")
    with open(os.path.join(out, "fixtures.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


def write_state_dicts(out):
    """torchvision's own full-size models' state-dict names and shapes (3 channels, 1000
    classes), in state_dict() order, for the description tests."""
    models = {"resnet18": torchvision.models.resnet18(), "resnet34": torchvision.models.resnet34(),
              "resnet50": torchvision.models.resnet50(), "mobilenet-v2": torchvision.models.mobilenet_v2()}
    j = {name: [[k, list(v.shape)] for k, v in m.state_dict().items()] for name, m in models.items()}
    with open(os.path.join(out, "state_dicts.json"), "w") as f:
        json.dump(j, f, separators=(",", ":"))
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/data/torchvision")
    ap.add_argument("--steps", type=int, default=40, help="SGD steps of batch 64 per model")
    ap.add_argument("--state-dicts-only", action="store_true", help="write only state_dicts.json")
    ap.add_argument("--load-back", metavar="CKPT", help="a vkqat checkpoint to load into the PyTorch model")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--width-mult", type=float, default=1.0)
    ap.add_argument("--in-channels", type=int, default=1)
    ap.add_argument("--classes", type=int, default=10)
    a = ap.parse_args()
    if a.load_back:
        m = build(a.model, a.width, a.width_mult, a.in_channels, a.classes)
        # strict: vkqat writes every BN's num_batches_tracked; a quantized or --aux checkpoint
        # also holds quantizer / aux.* tensors that the plain PyTorch model does not have.
        m.load_state_dict(load_safetensors(a.load_back), strict=True)
        print(f"{a.load_back}: loaded into PyTorch {a.model} with strict=True")
        return
    os.makedirs(a.out, exist_ok=True)
    write_state_dicts(a.out)
    if not a.state_dicts_only:
        make_fixtures(a.out, a.steps)


if __name__ == "__main__":
    main()
