#!/usr/bin/python3
"""Compare two safetensors checkpoints tensor by tensor: largest absolute difference and that
difference relative to the tensor's largest magnitude, sorted by the relative one.
Used to tell a formula change from float rounding between two builds (README, "The FP32 row").
Usage: scripts/compare_checkpoints.py A.safetensors B.safetensors [--top N]"""
import json, struct, sys

import numpy as np

DTYPES = {'F32': np.float32, 'F64': np.float64, 'F16': np.float16, 'I64': np.int64, 'I32': np.int32, 'U8': np.uint8}


def load(path):
    with open(path, 'rb') as f:
        raw = f.read()
    if len(raw) < 8:
        sys.exit(f'{path}: not a safetensors file (too short)')
    n = struct.unpack('<Q', raw[:8])[0]
    try:
        header = json.loads(raw[8:8 + n])
    except ValueError as e:
        sys.exit(f'{path}: bad safetensors header: {e}')
    data, out = raw[8 + n:], {}
    for name, v in header.items():
        if name == '__metadata__':
            continue
        if v['dtype'] not in DTYPES:
            continue
        begin, end = v['data_offsets']
        out[name] = np.frombuffer(data[begin:end], dtype=DTYPES[v['dtype']]).reshape(v['shape'])
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith('--')]
    top = int(sys.argv[sys.argv.index('--top') + 1]) if '--top' in sys.argv else 10
    if '--top' in sys.argv:
        args.remove(str(top))
    if len(args) != 2:
        sys.exit(__doc__)
    a, b = load(args[0]), load(args[1])
    for only, x, y in (('first', a, b), ('second', b, a)):
        missing = sorted(set(x) - set(y))
        if missing:
            print(f'only in the {only}: {", ".join(missing[:10])}{" ..." if len(missing) > 10 else ""}')
    rows = []
    for name in sorted(set(a) & set(b)):
        x, y = a[name].astype(np.float64), b[name].astype(np.float64)
        if x.shape != y.shape:
            print(f'{name}: shapes differ {x.shape} vs {y.shape}')
            continue
        if x.size == 0:
            continue
        d = float(np.abs(x - y).max())
        rows.append((d / (float(np.abs(x).max()) + 1e-30), d, name))
    rows.sort()
    for rel, d, name in rows[-top:]:
        print(f'{name:44s} max |diff| {d:.3e}  relative {rel:.3e}')


if __name__ == '__main__':
    main()
