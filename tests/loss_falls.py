#!/usr/bin/env python3
"""loss_falls.py RUN_DIR: exit 0 when the mean training loss of the last four logged steps in
RUN_DIR/metrics.jsonl is below that of the first four (and every loss is finite), else 1."""
import json
import math
import sys

losses = [r["loss"] for r in map(json.loads, open(sys.argv[1] + "/metrics.jsonl")) if r.get("type") == "step"]
first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
ok = len(losses) >= 8 and all(math.isfinite(x) for x in losses) and last < first
print(f"{len(losses)} steps, loss {first:.4f} (first four) -> {last:.4f} (last four): {'falls' if ok else 'DOES NOT FALL'}")
sys.exit(0 if ok else 1)
