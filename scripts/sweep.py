#!/usr/bin/python3
"""Run a grid of `vkqat train` runs and write results/<name>/TABLE.md, runs.json and PNG plots.

    scripts/sweep.py --protocol quick --name quick-lavapipe        # ResNet-20 w16, short runs (CPU)
    scripts/sweep.py --protocol quick --block mobilenet-v2 --name quick-lavapipe   # its MobileNetV2 block only
    scripts/sweep.py --protocol full  --name full-h100             # >= 30 epochs, 3 seeds, two-stage (GPU)

It runs under Debian's /usr/bin/python3, whose python3-matplotlib draws the plots.

The grid is FP32 plus, for each bit-width, the methods below; every cell is run for each seed
and reported as mean +- std over seeds. Runs live in runs/sweep-<name>/<config>-s<seed>; a run
that already has summary.json is reused, a run that was interrupted is resumed, so a sweep can be
stopped and restarted. Protocol values can be overridden by flags (--epochs, --seeds, ...).

A protocol is one or more blocks (a model and its grid). The first block's table is
results/<name>/TABLE.md, its runs runs/sweep-<name>/<config>-s<seed>; a later block B writes
results/<name>/B/TABLE.md from runs/sweep-<name>/B/. --block picks blocks (default: all).

Methods (what each adds, METHODS.md):
  dorefa-pact   DoReFa weights + PACT activations with the original alpha gradient (baseline)
  cgpact        PACT with SAT's calibrated alpha gradient (CG-PACT)
  sat           CG-PACT + the last FC rescaled to n_out Var = 1: the full SAT recipe
  aux           the full-precision auxiliary module on the DoReFa+PACT baseline (Zhuang et al.)
  aux+sat       both remedies: CG-PACT + SAT + aux
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

METHODS = {
    "dorefa-pact": ["--quantizer", "dorefa-pact"],
    "cgpact": ["--quantizer", "cgpact"],
    "sat": ["--quantizer", "cgpact", "--sat"],
    "aux": ["--quantizer", "dorefa-pact", "--aux"],
    "aux+sat": ["--quantizer", "cgpact", "--sat", "--aux"],
}

PROTOCOLS = {
    # Short enough for 2 CPU cores: a run of 100 steps of 128 images costs 2-4 min on lavapipe.
    "quick": dict(model="resnet20", width=16, epochs=1, seeds=[0, 1], bits=[4, 2, 3], train_limit=12800,
                  test_limit=2000, two_stage=False),
    # The paper-style protocol, for a GPU: FP32 (+aux) first, then every low-bit run starts from it.
    "full": dict(model="resnet20", width=16, epochs=30, seeds=[0, 1, 2], bits=[4, 3, 2], train_limit=0,
                 test_limit=0, two_stage=True),
}

# Further blocks of a protocol: (name, the values that differ from the protocol's). SAT's paper
# reports quantized MobileNets at 4 bits beating full precision; this block is a small-scale
# reading of that claim: MobileNetV2 x0.25 with the CIFAR stem, FP32 vs W4A4 CG-PACT with and
# without SAT, and with the aux module. Its quantized runs start their last FC at SAT's scale
# (`--fc-init sat`): from PyTorch's init, the 1280-wide classifier's first DoReFa/SAT step is
# ~384x the float layer's and no W4A4 run trained (README, "Quantized MobileNetV2"). Meant to take
# ~10 min on two quiet cores (lavapipe).
BLOCKS = {
    "quick": [("mobilenet-v2", dict(model="mobilenet-v2", width_mult=0.25, stem="cifar", bits=[4],
                                    methods=["cgpact", "sat", "aux+sat"], train_limit=6400, test_limit=1000,
                                    fc_init="sat"))],
}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default="quick")
    p.add_argument("--name", required=True, help="results/<name>/ and runs/sweep-<name>/")
    p.add_argument("--vkqat", default="build/vkqat", help="the vkqat binary")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--block", help="comma-separated blocks of the protocol to run (default: all): "
                                   + "; ".join(f"{k}: {','.join(block_names(k))}" for k in sorted(PROTOCOLS)))
    p.add_argument("--model")
    p.add_argument("--width", type=int)
    p.add_argument("--width-mult", type=float, help="mobilenet-v1/v2: the channel multiplier")
    p.add_argument("--stem", choices=["imagenet", "cifar"], help="torchvision models: the stem")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seeds", help="comma-separated, e.g. 0,1,2")
    p.add_argument("--bits", help="comma-separated W=A bit-widths, e.g. 4,3,2")
    p.add_argument("--methods", help="comma-separated subset of: " + ",".join(METHODS))
    p.add_argument("--no-fp32", action="store_true", help="leave out the FP32 baseline")
    p.add_argument("--cells", help="comma-separated configs to run, in this order, instead of the whole grid "
                                   "(e.g. fp32,w2a2-aux+sat,w4a4-dorefa-pact); the table still lists every cell")
    p.add_argument("--train-limit", type=int)
    p.add_argument("--test-limit", type=int)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, help="the block's (0.1 unless the block says)")
    p.add_argument("--results", default="results", help="where <name>/TABLE.md goes")
    p.add_argument("--runs", default="runs", help="where sweep-<name>/ run directories go")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    a = p.parse_args(argv)
    names = block_names(a.protocol)
    picked = a.block.split(",") if a.block else names
    unknown = [b for b in picked if b not in names]
    if unknown:
        p.error(f"--block: {unknown} not in the {a.protocol} protocol; known: {','.join(names)}")
    if a.width_mult is not None and not a.width_mult > 0:
        p.error(f"--width-mult: must be > 0, got {a.width_mult}")
    blocks = [(b, block_proto(p, a, b)) for b in picked]
    if a.cells:
        known = {name for _, proto in blocks for name, _, _ in grid(proto)}
        unknown = [c for c in a.cells.split(",") if c not in known]
        if unknown:
            p.error(f"--cells: {unknown} not in the grid; known: {','.join(sorted(known))}")
    return a, blocks


def block_names(protocol):
    return [PROTOCOLS[protocol]["model"]] + [name for name, _ in BLOCKS.get(protocol, [])]


def block_proto(p, a, block):
    """The settings of one block: the protocol's, the block's own, then the flags."""
    proto = dict(PROTOCOLS[a.protocol], width_mult=None, stem=None, lr=0.1, methods=list(METHODS), fc_init=None)
    proto.update(dict(BLOCKS.get(a.protocol, [])).get(block, {}))
    proto["block"] = block
    proto["first_block"] = block == block_names(a.protocol)[0]
    for key in ("model", "width", "width_mult", "stem", "lr", "epochs", "train_limit", "test_limit"):
        if getattr(a, key) is not None:
            proto[key] = getattr(a, key)
    if a.seeds:
        proto["seeds"] = [int(s) for s in a.seeds.split(",")]
    if a.bits:
        proto["bits"] = [int(b) for b in a.bits.split(",")]
        bad = [b for b in proto["bits"] if not 1 <= b <= 8]
        if bad:
            p.error(f"--bits: {bad} outside 1-8")
    if a.methods:
        proto["methods"] = a.methods.split(",")
        unknown = [m for m in proto["methods"] if m not in METHODS]
        if unknown:
            p.error(f"--methods: unknown {unknown}; known: {','.join(METHODS)}")
    proto["fp32"] = not a.no_fp32
    proto["cells"] = None
    if a.cells:  # the block runs the cells it has (parse_args checks each is in some block)
        known = {name for name, _, _ in grid(proto)}
        proto["cells"] = [c for c in a.cells.split(",") if c in known]
    return proto


def grid(proto):
    """(config name, bits, method) of the table: the FP32 baseline, then each bit-width."""
    cells = [("fp32", 32, "fp32")] if proto["fp32"] or proto["two_stage"] else []
    for bits in proto["bits"]:
        for m in proto["methods"]:
            cells.append((f"w{bits}a{bits}-{m}", bits, m))
    return cells


def run_order(proto):
    """The cells to run, in order: --cells if given, else the whole grid."""
    cells = grid(proto)
    if proto["cells"] is None:
        return cells
    by_name = {c[0]: c for c in cells}
    order = [by_name[c] for c in proto["cells"]]
    if proto["two_stage"]:  # the low-bit runs start from the FP32 run: it goes first
        order = [cells[0]] + [c for c in order if c[0] != "fp32"]
    return order


def train_command(a, proto, bits, method, seed, run_dir, init):
    shape = ["--width-mult", str(proto["width_mult"])] if proto["width_mult"] else ["--width", str(proto["width"])]
    shape += ["--stem", proto["stem"]] if proto["stem"] else []
    cmd = [a.vkqat, "train", "--data", a.data, "--model", proto["model"], *shape,
           "--epochs", str(proto["epochs"]), "--batch-size", str(a.batch_size), "--lr", str(proto["lr"]),
           "--seed", str(seed), "--wbits", str(bits), "--abits", str(bits), "--log-every", "10",
           "--out", run_dir]
    if proto["train_limit"]:
        cmd += ["--train-limit", str(proto["train_limit"])]
    if proto["test_limit"]:
        cmd += ["--test-limit", str(proto["test_limit"])]
    if method == "fp32":
        cmd += ["--aux"] if proto["two_stage"] else []  # stage one of the two-stage recipe trains FP32 + aux
    else:
        cmd += METHODS[method]
        cmd += ["--fc-init", proto["fc_init"]] if proto["fc_init"] else []
        if init:
            cmd += ["--init", init]
    return cmd


def run_one(a, cmd, run_dir):
    summary = os.path.join(run_dir, "summary.json")
    if os.path.exists(summary):
        return "reused"
    if any(os.path.exists(os.path.join(run_dir, f)) for f in ("run_state.json", "trainer_state.safetensors")):
        cmd = [a.vkqat, "train", "--resume", run_dir]
    print("+", " ".join(cmd), flush=True)
    if a.dry_run:
        return "dry-run"
    os.makedirs(os.path.dirname(run_dir) or ".", exist_ok=True)
    with open(run_dir + ".log", "w") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    if rc != 0 or not os.path.exists(summary):
        raise SystemExit(f"sweep: run failed (exit {rc}); see {run_dir}.log")
    return "ran"


def read_run(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        s = json.load(f)
    epochs, steps = [], []
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            (epochs if r.get("type") == "epoch" else steps).append(r)
    return {"test_acc": s["test_acc"], "aux_test_acc": s.get("aux_test_acc"),
            "train_images_per_s": s.get("train_images_per_s"), "seconds": s.get("seconds"),
            "device": s.get("device"), "epoch_test_acc": [e["test_acc"] for e in epochs],
            "step_loss": [(r["step"], r["loss"]) for r in steps if "loss" in r]}


def mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def fmt(m, sd, n):
    if m is None:
        return "-"
    return f"{100 * m:.2f} ± {100 * sd:.2f}" if n > 1 else f"{100 * m:.2f}"


def write_table(path, a, proto, results):
    cells = grid(proto)
    devices = sorted({r["device"] for runs in results.values() for r in runs.values() if r.get("device")})
    block = "" if proto["first_block"] else f", {proto['block']} block"
    model = (f"{proto['model']} width-mult {proto['width_mult']:g}" if proto["width_mult"] else
             f"{proto['model']} width {proto['width']}") + (f", {proto['stem']} stem" if proto["stem"] else "")
    lines = [f"# Sweep `{a.name}` ({a.protocol} protocol{block})", "",
             f"{model}, {proto['epochs']} epoch(s), batch {a.batch_size}, "
             f"lr {proto['lr']} (cosine), data {a.data}"
             + (f", first {proto['train_limit']} training images" if proto["train_limit"] else "")
             + (f", first {proto['test_limit']} test images" if proto["test_limit"] else ", full test set")
             + (f", low-bit runs with `--fc-init {proto['fc_init']}`" if proto["fc_init"] else "")
             + (", low-bit runs initialised from the FP32+aux run of the same seed" if proto["two_stage"] else
                ", every run from scratch")
             + f". Seeds {','.join(map(str, proto['seeds']))}; test accuracy in %, mean ± std over seeds "
             "(sample std). LP = the low-precision network (the deliverable), aux = the full-precision "
             "auxiliary head (training only). img/s is wall clock: it drops when other jobs share the device.",
             "",
             f"Device: {', '.join(devices) or '-'}. Produced by `scripts/sweep.py --protocol {a.protocol} "
             + ("" if proto["first_block"] else f"--block {proto['block']} ")
             + f"--name {a.name}`; raw numbers in runs.json.", "",
             "| config | bits | method | LP test acc | aux test acc | seeds done | train img/s (wall clock) |",
             "|---|---|---|---|---|---|---|"]
    for name, bits, method in cells:
        runs = results.get(name, {})
        lp = mean_std([r["test_acc"] for r in runs.values()])
        aux = mean_std([r["aux_test_acc"] for r in runs.values()])
        ips = mean_std([r["train_images_per_s"] for r in runs.values()])
        lines.append(f"| {name} | {'W32A32' if bits == 32 else f'W{bits}A{bits}'} | {method} | "
                     f"{fmt(*lp, len(runs))} | {fmt(*aux, len(runs))} | {len(runs)}/{len(proto['seeds'])} | "
                     f"{ips[0]:.0f} |" if runs else
                     f"| {name} | W{bits}A{bits} | {method} | - | - | 0/{len(proto['seeds'])} | - |")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)


def plot(out_dir, proto, results):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("sweep: python3-matplotlib is missing, no plots written", file=sys.stderr)
        return
    cells = [c for c in grid(proto) if results.get(c[0])]
    if not cells:
        return
    # 1. test accuracy per epoch (mean over seeds), one line per config; with one-epoch runs the
    #    training loss per step says more, so it is plotted next to it.
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(13, 5))
    for name, bits, method in cells:
        runs = list(results[name].values())
        n_ep = min(len(r["epoch_test_acc"]) for r in runs)
        acc = [sum(r["epoch_test_acc"][e] for r in runs) / len(runs) for e in range(n_ep)]
        ax_acc.plot(range(1, n_ep + 1), [100 * x for x in acc], marker="o", label=name)
        steps = [s for s, _ in runs[0]["step_loss"]]
        loss = [sum(dict(r["step_loss"]).get(s, float("nan")) for r in runs) / len(runs) for s in steps]
        ax_loss.plot(steps, loss, label=name)
    ax_acc.set(xlabel="epoch", ylabel="LP test accuracy (%)", title="test accuracy per epoch (mean over seeds)")
    ax_loss.set(xlabel="step", ylabel="training loss (LP + λ·aux)", title="training loss")
    ax_acc.legend(fontsize=7)
    ax_acc.grid(alpha=0.3)
    ax_loss.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "accuracy_per_epoch.png"), dpi=100)
    plt.close(fig)
    # 2. final accuracy bars, grouped by bit-width, with std error bars; aux head hatched.
    fig, ax = plt.subplots(figsize=(13, 5))
    labels, lp_m, lp_s, aux_m = [], [], [], []
    for name, bits, method in cells:
        runs = results[name].values()
        m, sd = mean_std([r["test_acc"] for r in runs])
        am, _ = mean_std([r["aux_test_acc"] for r in runs])
        labels.append(name)
        lp_m.append(100 * m)
        lp_s.append(100 * sd)
        aux_m.append(100 * am if am is not None else 0)
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], lp_m, 0.4, yerr=lp_s, capsize=3, label="LP head")
    ax.bar([i + 0.2 for i in x], aux_m, 0.4, hatch="//", alpha=0.6, label="aux head (training only)")
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, rotation=40, ha="right", fontsize=8)
    ax.set(ylabel="test accuracy (%)", title="final test accuracy, mean ± std over seeds")
    lo = min(v for v in lp_m + [a for a in aux_m if a > 0])
    ax.set_ylim(max(0, lo - 10), 100)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "final_accuracy.png"), dpi=100)
    plt.close(fig)


def collect(runs_root, proto):
    """Every finished run of the grid on disk, also those of earlier invocations (--cells)."""
    results = {}
    for name, _, _ in grid(proto):
        for seed in proto["seeds"]:
            run_dir = os.path.join(runs_root, f"{name}-s{seed}")
            if os.path.exists(os.path.join(run_dir, "summary.json")):
                results.setdefault(name, {})[seed] = read_run(run_dir)
    return results


def main(argv):
    a, blocks = parse_args(argv)
    if not a.dry_run and not os.access(a.vkqat, os.X_OK):
        raise SystemExit(f"sweep: --vkqat {a.vkqat}: not an executable (run `make build` first)")
    for _, proto in blocks:
        run_block(a, proto)
    return 0


def run_block(a, proto):
    sub = [] if proto["first_block"] else [proto["block"]]
    runs_root = os.path.join(a.runs, f"sweep-{a.name}", *sub)
    out_dir = os.path.join(a.results, a.name, *sub)
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.time()
    for seed in proto["seeds"]:  # seed-major: an interrupted sweep has whole grids, not whole columns
        init = None
        for name, bits, method in run_order(proto):
            run_dir = os.path.join(runs_root, f"{name}-s{seed}")
            status = run_one(a, train_command(a, proto, bits, method, seed, run_dir, init), run_dir)
            if method == "fp32" and proto["two_stage"]:
                init = os.path.join(run_dir, "checkpoint.safetensors")
            if a.dry_run:
                continue
            r = read_run(run_dir)
            print(f"sweep: {name} seed {seed}: LP {100 * r['test_acc']:.2f}%"
                  + (f", aux {100 * r['aux_test_acc']:.2f}%" if r["aux_test_acc"] is not None else "")
                  + f" ({status}, {time.time() - t0:.0f} s so far)", flush=True)
            # Rewrite the table after every run: a long sweep shows its progress.
            write_table(os.path.join(out_dir, "TABLE.md"), a, proto, collect(runs_root, proto))
    if a.dry_run:
        return
    results = collect(runs_root, proto)
    write_table(os.path.join(out_dir, "TABLE.md"), a, proto, results)
    with open(os.path.join(out_dir, "runs.json"), "w") as f:
        json.dump({"protocol": a.protocol, "settings": {k: v for k, v in proto.items()},
                   "runs": {n: {str(s): r for s, r in rs.items()} for n, rs in results.items()}}, f, indent=1)
    plot(out_dir, proto, results)
    print(f"sweep: wrote {out_dir}/TABLE.md", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
