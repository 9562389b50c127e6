#!/usr/bin/env python3
"""Issue 16's hostile-user cases against the vkqat and vkqat-viz binaries: every bad input
gives a message naming the flag or file and exit 1 (2 for usage errors), never a crash,
a silent pass or an overwritten input; SIGTERM checkpoints like Ctrl-C; --resume checks
its flags and resumes from another directory.

usage: cli_inputs.py VKQAT [VKQAT_VIZ]   (run by ctest as cli_inputs)
"""
import gzip
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

VKQAT = os.path.abspath(sys.argv[1])
VIZ = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 and os.path.exists(sys.argv[2]) else None
FMNIST = "/usr/share/datasets/fashion-mnist"
failures = []


def run(args, cwd=None, env=None, user=None):
    cmd = ([VKQAT] if not args or not args[0].startswith("/") else []) + args
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] + cmd
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    return p.returncode, p.stdout + p.stderr


def expect(name, args, code, text, **kw):
    rc, out = run(args, **kw)
    ok = rc == code and text in out
    print(f"{'ok  ' if ok else 'FAIL'} {name}: exit {rc}" + ("" if ok else f" (want {code}, '{text}')\n{out}"))
    if not ok:
        failures.append(name)
    return out


def subset(src_prefix, dst_prefix, n, side=None):
    """The first n images of a Fashion-MNIST split as raw IDX (optionally padded to side x side)."""
    with gzip.open(src_prefix + "-images-idx3-ubyte.gz") as f:
        magic, total, h, w = struct.unpack(">IIII", f.read(16))
        pix = f.read(n * h * w)
    with gzip.open(src_prefix + "-labels-idx1-ubyte.gz") as f:
        f.read(8)
        lab = f.read(n)
    if side:
        pad = b"".join(pix[i * h * w:(i + 1) * h * w] + bytes(side * side - h * w) for i in range(n))
        pix, h, w = pad, side, side
    with open(dst_prefix + "-images-idx3-ubyte", "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, h, w) + pix)
    with open(dst_prefix + "-labels-idx1-ubyte", "wb") as f:
        f.write(struct.pack(">II", 2049, n) + lab)


def edited_safetensors(src, dst, edit):
    """A copy of a safetensors file whose header `edit` changes (the data is kept)."""
    with open(src, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    edit(header)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def torchvision_models(tmp, data):
    """Issue 12: torchvision models' flags, sizes and PyTorch files with a bad tensor."""
    small = ["--batch-size", "16", "--data-dir", data]
    expect("unknown --model", ["train", *small, "--out", tmp + "/um", "--model", "resnet21"], 2, "--model")
    expect("--width-mult 0", ["train", *small, "--out", tmp + "/wm", "--model", "mobilenet-v2", "--width-mult", "0"], 2,
           "--width-mult")
    expect("--width-mult -1", ["train", *small, "--out", tmp + "/wm", "--model", "mobilenet-v1", "--width-mult=-1"], 2,
           "--width-mult")
    expect("--stem tiny", ["train", *small, "--out", tmp + "/st", "--model", "resnet18", "--stem", "tiny"], 2, "--stem")
    expect("image too small for the stem", ["model", "show", "resnet18", "--height", "8", "--image-width", "8"], 1,
           "layer 'layer3.0.conv1' (stride 2) gets 1x1")
    tv = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "torchvision")
    r18 = os.path.join(tv, "resnet18.safetensors")
    ev = ["eval", "--data-dir", data, "--model", "resnet18", "--checkpoint"]
    expect("eval a PyTorch resnet18", [*ev, r18], 0, "test_acc")

    def misshape(h):
        h["layer1.0.conv1.weight"]["shape"] = [8, 8, 1, 9]
    edited_safetensors(r18, tmp + "/misshaped.safetensors", misshape)
    expect("PyTorch file, misshaped tensor", [*ev, tmp + "/misshaped.safetensors"], 1,
           "tensor 'layer1.0.conv1.weight' has shape [8, 8, 1, 9], the model expects [8, 8, 3, 3]")
    edited_safetensors(r18, tmp + "/missing.safetensors", lambda h: h.pop("layer2.0.bn1.running_var"))
    expect("PyTorch file, missing tensor", [*ev, tmp + "/missing.safetensors"], 1,
           "tensor 'layer2.0.bn1.running_var' is missing")
    expect("--init PyTorch file, missing tensor", ["train", *small, "--out", tmp + "/ini", "--model", "resnet18",
                                                   "--init", tmp + "/missing.safetensors"], 1,
           "tensor 'layer2.0.bn1.running_var' is missing")
    expect("PyTorch resnet18 named as resnet50", ["eval", "--data-dir", data, "--model", "resnet50", "--checkpoint", r18], 1,
           "layer1.0.conv1.weight")


def main():
    tmp = tempfile.mkdtemp(prefix="vkqat-cli-")
    os.chmod(tmp, 0o755)
    data = os.path.join(tmp, "data")
    os.makedirs(data)
    subset(FMNIST + "/train", data + "/train", 256)
    subset(FMNIST + "/t10k", data + "/t10k", 64)
    small = ["--width", "4", "--batch-size", "16", "--data-dir", data]

    # 1. test images of another size than the training images
    for side in (32, 20):
        other = os.path.join(tmp, f"data{side}")
        os.makedirs(other)
        shutil.copy(data + "/train-images-idx3-ubyte", other)
        shutil.copy(data + "/train-labels-idx1-ubyte", other)
        subset(FMNIST + "/t10k", other + "/t10k", 64, side if side > 28 else None)
        if side < 28:  # crop instead of pad: rewrite with smaller images
            with open(other + "/t10k-images-idx3-ubyte", "wb") as f:
                f.write(struct.pack(">IIII", 2051, 64, side, side) + bytes(64 * side * side))
        expect(f"test images {side}x{side}", ["train", "--width", "4", "--batch-size", "16", "--data-dir", other,
                                              "--out", tmp + f"/r{side}"], 1, "test images are 1x%d" % side)
    # 2. --log-every 0 (was SIGFPE)
    expect("--log-every 0", ["train", *small, "--out", tmp + "/log0", "--log-every", "0"], 2, "--log-every")
    # 3. non-finite hyper-parameters and divergence
    expect("--lr inf", ["train", *small, "--out", tmp + "/lrinf", "--lr", "inf"], 1, "--lr")
    expect("--warmup-epochs nan", ["train", *small, "--out", tmp + "/wnan", "--warmup-epochs", "nan"], 1,
           "--warmup-epochs")
    expect("--lr 1e6 diverges", ["train", *small, "--out", tmp + "/lrbig", "--lr", "1e6"], 1, "diverged at step")
    # a good run for the cases below
    good = tmp + "/good"
    expect("a good run", ["train", *small, "--out", good, "--epochs", "1"], 0, "test_acc")
    ckpt = good + "/checkpoint.safetensors"
    # 6. export / export-lp onto their own input
    before = open(ckpt, "rb").read()
    expect("export-lp --out = --checkpoint", ["export-lp", "--checkpoint", ckpt, "--out", ckpt], 1,
           "is the --checkpoint file itself")
    expect("export --out = --checkpoint (other spelling)",
           ["export", "--checkpoint", ckpt, "--out", good + "/../good/checkpoint.safetensors"], 1,
           "is the --checkpoint file itself")
    if open(ckpt, "rb").read() != before:
        failures.append("checkpoint changed by a refused export")
    # 7. --resume: fixed flags, changeable flags, from another directory
    rel = tmp + "/rel"
    expect("relative --data-dir run", ["train", "--width", "4", "--batch-size", "16", "--data-dir", "data",
                                       "--out", "rel", "--stop-after-steps", "3"], 130, "continue with", cwd=tmp)
    expect("--resume with another --lr", ["train", "--resume", rel, "--lr", "0.5"], 1, "--lr 0.5 differs")
    expect("--resume with another --width", ["train", "--resume", rel, "--width", "8"], 1, "--width 8 differs")
    expect("--resume with --sync-bn", ["train", "--resume", rel, "--sync-bn"], 1, "--sync-bn true differs")
    expect("--resume with --init", ["train", "--resume", rel, "--init", ckpt], 1, "--init cannot be given")
    expect("--resume from elsewhere, --epochs applied",
           ["train", "--resume", rel, "--epochs", "2", "--lr", "0.1", "--stop-after-steps", "2"], 130,
           "--epochs changed from", cwd="/")
    moved = tmp + "/data-moved"
    shutil.move(data, moved)
    expect("--resume after the data moved", ["train", "--resume", rel, "--stop-after-steps", "1"], 1, data)
    expect("--resume --data-dir repairs it", ["train", "--resume", rel, "--data-dir", moved], 0, "test_acc")
    shutil.move(moved, data)
    # 9. SIGTERM checkpoints like Ctrl-C
    term = tmp + "/term"
    p = subprocess.Popen([VKQAT, "train", *small, "--out", term, "--epochs", "50", "--log-every", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (os.path.exists(term + "/metrics.jsonl") and
                                          os.path.getsize(term + "/metrics.jsonl") > 0):
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=300)
    ok = p.returncode == 130 and "stopped at step" in out and os.path.exists(term + "/run_state.json")
    print(f"{'ok  ' if ok else 'FAIL'} SIGTERM: exit {p.returncode}" + ("" if ok else "\n" + out))
    if not ok:
        failures.append("SIGTERM")
    # 9. the smaller cases: negative numbers, parse errors, permissions
    expect("infer --latency-images -3", ["infer", "--model", ckpt, "--latency-images", "-3"], 2, "--latency-images")
    expect("train --device -5", ["train", *small, "--out", tmp + "/d", "--device", "-5"], 2, "--device")
    expect("train --seed -1", ["train", *small, "--out", tmp + "/d", "--seed", "-1"], 2, "--seed")
    expect("eval --limit -5", ["eval", "--checkpoint", ckpt, "--limit", "-5"], 2, "--limit")
    expect("unknown flag", ["train", "--no-such-flag"], 2, "--no-such-flag")
    expect("--width 0", ["train", *small, "--out", tmp + "/w0", "--width", "0"], 2, "--width")
    expect("--bits-config DIR", ["train", *small, "--out", tmp + "/bc", "--wbits", "4", "--bits-config", tmp], 1,
           "is a directory")
    locked = tmp + "/locked"
    shutil.copytree(data, locked)
    os.chmod(locked, 0)
    user = "65534" if os.geteuid() == 0 else None  # nobody  # root reads anything: check as an ordinary user
    cache = tmp + "/cache"
    os.makedirs(cache)
    os.chmod(cache, 0o777)
    if user and not shutil.which("setpriv"):
        print("skip chmod 000 data directory: running as root without setpriv (util-linux)")
    else:
        expect("chmod 000 data directory", ["train", "--width", "4", "--batch-size", "16", "--data-dir", locked,
                                            "--out", cache + "/lk"], 1, "not readable", user=user,
               env=dict(os.environ, XDG_CACHE_HOME=cache, HOME=cache))
    os.chmod(locked, 0o755)
    torchvision_models(tmp, data)
    if VIZ:
        expect("viz: unwritable --screenshot found before training",
               [VIZ, *small, "--out", tmp + "/viz", "--headless", "--screenshot", "/proc/no-such-dir/x.png"], 1,
               "--screenshot")
        expect("viz: unwritable --gpu-times found before training",
               [VIZ, *small, "--out", tmp + "/viz", "--headless", "--screenshot", tmp + "/viz.png",
                "--gpu-times", "/proc/no-such-dir/g.json"], 1, "--gpu-times")
        expect("viz: --gpu-times on a replay", [VIZ, "--replay", tmp, "--headless", "--screenshot", tmp + "/r.png",
                                                "--gpu-times", tmp + "/g.json"], 1, "needs a live run")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(failures)} failures" + (": " + ", ".join(failures) if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
