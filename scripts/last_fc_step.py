#!/usr/bin/python3
"""The last FC's first SGD step, by hand (DoReFa METHODS.md §1, SAT §3), from two runs of the same
seed: INIT_RUN (--stop-after-steps 1 at a negligible --lr, e.g. 1e-12: its weights are the
initialisation) and STEP_RUN (--stop-after-steps 1 at the real lr). Prints the scale of the
latent weight, the backward gain dL/dw / dL/dW*, the step on W* against the float layer's, and
the features implied by the gradient (dL/dW*_j = mean_b (p - y)_bj x_b, nearly rank 1 at init:
g_b (x) xbar). How issue 12 (quantized MobileNetV2, loss 12 -> 130 after one step) was measured.
Usage: scripts/last_fc_step.py INIT_RUN STEP_RUN [--layer classifier.1] [--bits 8] [--no-sat]
       [--lr 0.005] [--momentum 0.9] [--wd 5e-4]   (Nesterov SGD, as vkqat's default)"""
import argparse, os, sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_checkpoints import load  # noqa: E402


def effective(w, bits, sat, n_out):
    """W* and what the backward multiplies dL/dW* by: DoReFa (bits < 32), then SAT's rescale."""
    if bits < 32:
        t = np.tanh(w)
        m = np.abs(t).max()
        n = 2**bits - 1
        wq = 2 * np.floor(n * (t / (2 * m) + 0.5) + 0.5) / n - 1
        dq_dw = (1 - t**2) / m
    else:
        wq, dq_dw = w, np.ones_like(w)
    f = 1 / np.sqrt(n_out * wq.var()) if sat else 1.0
    return f * wq, f * dq_dw


def main():
    ap = argparse.ArgumentParser(usage=__doc__)
    ap.add_argument('init_run')
    ap.add_argument('step_run')
    ap.add_argument('--layer', default='classifier.1')
    ap.add_argument('--bits', type=int, default=8)
    ap.add_argument('--no-sat', action='store_true')
    ap.add_argument('--lr', type=float, default=0.005)
    ap.add_argument('--momentum', type=float, default=0.9)
    ap.add_argument('--wd', type=float, default=5e-4)
    a = ap.parse_args()
    name = a.layer + '.weight'
    try:
        w0 = load(os.path.join(a.init_run, 'checkpoint.safetensors'))[name].astype(np.float64)
        ck = load(os.path.join(a.step_run, 'checkpoint.safetensors'))
        state = load(os.path.join(a.step_run, 'checkpoints', 'step-1', 'trainer_state.safetensors'))
        buf = state[name + '.momentum'].astype(np.float64).reshape(w0.shape)
        gb = state[a.layer + '.bias.momentum'].astype(np.float64)  # no weight decay on biases
    except (OSError, KeyError) as e:
        sys.exit(f'last_fc_step.py: {e} (runs of --stop-after-steps 1 with a layer {a.layer}?)')
    w1 = ck[name].astype(np.float64)
    sat = not a.no_sat
    n_out = w0.shape[0]
    ws0, gain = effective(w0, a.bits, sat, n_out)
    ws1, _ = effective(w1, a.bits, sat, n_out)
    print(f'{name} {list(w0.shape)}: max|w| {np.abs(w0).max():.4g}, rms {np.sqrt((w0**2).mean()):.4g}; '
          f'n_out Var[W*] {n_out * ws0.var():.6f}')
    # Nesterov's first step: buf = g + wd w, w1 = w0 - lr (1 + momentum) buf
    print(f'SGD step reproduced to {np.abs(w1 - (w0 - a.lr * (1 + a.momentum) * buf)).max():.2g}')
    g_star = (buf - a.wd * w0) / gain
    print(f'backward gain dL/dw / dL/dW* (mean) {gain.mean():.4g}: the step on W* is {gain.mean()**2:.4g}x '
          'the float layer\'s at the same lr')
    xbar = (gb[:, None] * g_star).sum(0) / (gb**2).sum()
    res = np.linalg.norm(g_star - np.outer(gb, xbar)) / np.linalg.norm(g_star)
    print(f'features implied by dL/dW*: |xbar| {np.linalg.norm(xbar):.4g}, rms {np.sqrt((xbar**2).mean()):.4g}, '
          f'>= 0: {np.mean(xbar >= 0):.3f}, rank-1 residual {res:.3f}')
    d = ws1 - ws0
    _, s, vt = np.linalg.svd(d, full_matrices=False)
    print(f'|W*| {np.linalg.norm(ws0):.4g}, |W*1 - W*0| {np.linalg.norm(d):.4g}; top direction {s[0] / np.linalg.norm(s):.3f} '
          f'of it, cos to xbar {abs(vt[0] @ xbar) / np.linalg.norm(xbar):.3f}')
    for when, ws in (('before', ws0), ('after', ws1)):
        z = ws @ xbar
        print(f'logits of xbar {when} the step: {np.array2string(z, precision=1)} (spread {z.max() - z.min():.1f})')


if __name__ == '__main__':
    main()
