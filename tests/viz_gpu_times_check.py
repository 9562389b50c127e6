#!/usr/bin/env python3
"""Checks the GPU-time list vkqat-viz writes with --gpu-times (issue: the panel blamed the
quantizers for the convolutions' time because each timestamp landed on the wrong label).

Every command of the step must be timed, and the convolutions must carry the step: the
conv kernels (every conv2d* label, whichever variant the device gets) together take several
times what the per-tensor quantizer kernels (DoReFa's weight backward, PACT's clip gradient)
take, as in `vkqat train --profile` (about 40% vs 4% at width 4; with the timestamps off by
one command it read 27% vs 31%)."""
import json
import sys

d = json.load(open(sys.argv[1]))
share = {k["label"]: k["share"] for k in d["kernels"]}
errors = []
if not d["complete"] or d["timed"] != d["commands"]:
    errors.append(f"incomplete: {d['timed']} of {d['commands']} commands timed, complete={d['complete']}")
conv = sum(v for k, v in share.items() if k.startswith("conv2d"))
quant = sum(share.get(k, 0) for k in ("dorefa_w_bwd", "pact_bwd dalpha"))
if not conv > 3 * quant:
    errors.append(f"conv kernels {conv:.1%} of the step, quantizer kernels {quant:.1%}: the labels are off")
for k in d["kernels"][:5]:
    print(f"{k['label']:36s} {k['share']:6.1%}")
if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"ok: step {d['step']}, {d['commands']} commands, conv {conv:.1%}, quantizers {quant:.1%}")
