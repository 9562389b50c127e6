#!/usr/bin/env python3
"""torchvision's ImageFolder + DataLoader on the JPEG folder `vkqat bench --only data --data-dir DIR`
keeps: the same files and the same transform (RandomResizedCrop(224) + flip + ToTensor + Normalize),
batch 32, images/s for each --workers count (0 = in the main process, the per-core rate).

    build/vkqat bench --only data --data-dir /tmp/jpegs          # vkqat: 1 worker, all cores, the cache
    python3 scripts/torchvision_data_bench.py /tmp/jpegs --workers 0 1 2

Each count runs a warm-up pass and then draws at least --images images; the cases alternate in
--rounds rounds and each reports its median (a shared machine's speed drifts). Needs torch and
torchvision (optional; Debian: python3-torch python3-torchvision).
"""
import argparse
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="ImageFolder root with train/<class>/*.jpg")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    try:
        import torch
        import torchvision
        from torchvision import datasets, transforms
    except ImportError as e:
        sys.exit(f"torchvision_data_bench.py: needs torch and torchvision ({e})")
    torch.set_num_threads(1)  # one core per loader process, like one vkqat worker
    tf = transforms.Compose([
        transforms.RandomResizedCrop(224),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    try:
        ds = datasets.ImageFolder(f"{args.folder}/train", transform=tf)
    except (FileNotFoundError, RuntimeError) as e:
        sys.exit(f"torchvision_data_bench.py: {args.folder}/train: {e}")

    def drain(workers):
        loader = torch.utils.data.DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=workers,
                                             persistent_workers=workers > 0)
        for _ in loader:  # warm-up: worker start, page cache
            break
        n, t0 = 0, time.perf_counter()
        while n < args.images:
            for x, _ in loader:
                n += x.shape[0]
        return n / (time.perf_counter() - t0)

    rates = {w: [] for w in args.workers}
    for _ in range(args.rounds):
        for w in args.workers:
            rates[w].append(drain(w))
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {len(ds)} images, batch {args.batch}")
    for w in args.workers:
        where = "main process" if w == 0 else f"{w} worker process{'es' if w > 1 else ''}"
        print(f"torchvision ImageFolder+DataLoader, {where}: {statistics.median(rates[w]):.1f} img/s "
              f"(rounds: {', '.join(f'{r:.1f}' for r in rates[w])})")


if __name__ == "__main__":
    main()
