#!/usr/bin/env python3
"""Distributed = local, on checkpoint files: compares the checkpoint of one
cluster update (gannf-coord run --iterations 1) with one local gannf-train
step on the same images (--steps 1), tensor by tensor, at a tolerance fit for
workers on different back ends (a GPU worker beside a CPU one).

  compare_checkpoints.py LOCAL_CHECKPOINT CLUSTER_CHECKPOINT [--rtol 1e-4]
                         [--losses LOCAL_LOSSES_CSV CLUSTER_LOSSES_CSV]

Each folder holds generator.safetensors, discriminator.safetensors and
state.safetensors (gannf's checkpoint). What is compared:

  - counters (steps, both Adam steps) and BN num_batches_tracked: equal;
  - every float tensor (weights, BN parameters and running statistics, Adam's
    moments): relative L2 distance ||cluster - local|| / ||local|| <= rtol;
  - one exception, from Adam: its first step moves a weight by
    lr * g / (|g| + eps), whose sensitivity to g is lr * eps / (|g| + eps)^2.
    Where the local gradient is within 100 eps of zero, a difference in g at
    the level of float rounding (CPU against GPU: ~1e-6 of the tensor's
    gradient) moves the step by a visible fraction of lr, up to a sign
    flip. Those weights (found from the local Adam moment: g = m / (1 - beta1)
    after one step) are held to "at most two Adam steps apart" (|d| <= 2 lr)
    and left out of the weight tensor's L2 distance; they are counted;
  - the first losses row of the two runs (--losses): D and G loss, D(x),
    D(G(z)) within rtol relative (+ 1e-6 absolute).

Why 1e-4: the CUDA back end's gradients are ~1e-6 (relative L2) from the
CPU's (CudaStep.GanStepAndAdamMatchCpu holds them to 1e-4); Adam's first step
is lr * sign(g) away from the Adam exception above, so weights agree far
closer than that, and the moments (0.5 g, 0.001 g^2) carry the gradients'
distance itself. Between two CPU workers the distances are ~1e-7.

Standard library only (numpy is used when it is there, for speed). Prints a
line per file, the worst tensor, and a RESULT line; exit status 0 when
everything is within bounds, 1 otherwise, 2 on unreadable input.
"""
import argparse
import array
import json
import math
import os
import struct
import sys

try:
    import numpy as np
except ImportError:  # pure Python below
    np = None


def load_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    tensors = {}
    for name, t in header.items():
        b, e = t["data_offsets"]
        raw = blob[base + b:base + e]
        if t["dtype"] == "F32":
            if np is not None:
                tensors[name] = np.frombuffer(raw, dtype="<f4").astype(np.float64)
            else:
                a = array.array("f")
                a.frombytes(raw)
                if sys.byteorder != "little":
                    a.byteswap()
                tensors[name] = list(a)
        elif t["dtype"] == "I64":
            tensors[name] = list(struct.unpack("<%dq" % (len(raw) // 8), raw))
        else:
            raise ValueError(f"{path}: tensor {name} has dtype {t['dtype']}")
    return tensors, meta


def param_offsets(tensors):
    """Offsets of the parameter tensors in the network's flat buffer (the
    layout of src/nn/net.cpp: layers in order, a BN layer's weight then
    bias), which Adam's moments follow."""
    names = [k for k in tensors if not (k.endswith("running_mean") or k.endswith("running_var")
                                        or k.endswith("num_batches_tracked"))]
    names.sort(key=lambda k: (int(k.split(".")[1]), 0 if k.endswith("weight") else 1))
    off, out = 0, {}
    for k in names:
        out[k] = off
        off += len(tensors[k])
    return out, off


def rel_l2(a, b, skip=None):
    """||a - b|| / ||b||, leaving out the indices in skip from the numerator."""
    if np is not None:
        d = a - b
        if skip is not None:
            d = np.where(skip, 0.0, d)
        num, den = float(np.dot(d, d)), float(np.dot(b, b))
    else:
        num = sum((x - y) ** 2 for i, (x, y) in enumerate(zip(a, b)) if skip is None or not skip[i])
        den = sum(y * y for y in b)
    return math.sqrt(num / den) if den > 0 else math.sqrt(num)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("local")
    ap.add_argument("cluster")
    ap.add_argument("--rtol", type=float, default=1e-4, help="per-tensor relative L2 bound (default 1e-4)")
    ap.add_argument("--eps", type=float, default=1e-8, help="Adam's epsilon")
    ap.add_argument("--losses", nargs=2, metavar=("LOCAL_CSV", "CLUSTER_CSV"))
    args = ap.parse_args()

    failures = []
    worst = (0.0, "")
    sensitive_total = sensitive_moved = 0
    sensitive_max = 0.0
    try:
        loaded = {}
        for which, folder in (("local", args.local), ("cluster", args.cluster)):
            for f in ("generator", "discriminator", "state"):
                loaded[which, f] = load_safetensors(os.path.join(folder, f + ".safetensors"))
    except (OSError, ValueError, KeyError) as e:
        print(f"compare_checkpoints: cannot read the checkpoints: {e}", file=sys.stderr)
        print("RESULT compare=unreadable")
        return 2
    state_local, state_meta = loaded["local", "state"]
    training = json.loads(state_meta.get("gannf.training", "{}"))
    lr, beta1 = float(training.get("lr", 2e-4)), float(training.get("beta1", 0.5))

    for f in ("generator", "discriminator", "state"):
        L, _ = loaded["local", f]
        C, _ = loaded["cluster", f]
        offsets, total = param_offsets(L) if f != "state" else ({}, 0)
        grad = None
        if offsets:
            m = state_local.get(f + ".adam.exp_avg")
            if m is None or len(m) != total:
                failures.append(f"{f}: Adam's moment does not match the parameter layout")
            else:
                grad = m
        file_worst, n_tensors = 0.0, 0
        for name in sorted(L):
            if name not in C:
                failures.append(f"{f}: {name} missing from the cluster's checkpoint")
                continue
            lv, cv = L[name], C[name]
            if isinstance(lv, list) and (not lv or isinstance(lv[0], int)):  # I64
                if name == "counters":
                    for i, what in ((0, "steps"), (3, "G's Adam step"), (4, "D's Adam step")):
                        if len(cv) != 5 or cv[i] != lv[i]:
                            failures.append(f"counters: {what} {cv[i] if len(cv) == 5 else '?'} (cluster) "
                                            f"against {lv[i]} (local)")
                elif cv != lv:
                    failures.append(f"{f}: {name} {cv} (cluster) against {lv} (local)")
                continue
            if len(lv) != len(cv):
                failures.append(f"{f}: {name} has {len(cv)} values (cluster) against {len(lv)} (local)")
                continue
            skip = None
            if grad is not None and name in offsets:
                o = offsets[name]
                g = grad[o:o + len(lv)]
                if np is not None:
                    skip = np.abs(g / (1 - beta1)) < 100 * args.eps
                    if skip.any():
                        d = np.abs(cv - lv)[skip]
                        sensitive_total += int(skip.sum())
                        sensitive_moved += int((d > args.rtol * np.abs(lv[skip]) + 1e-12).sum())
                        sensitive_max = max(sensitive_max, float(d.max()))
                else:
                    skip = [abs(x / (1 - beta1)) < 100 * args.eps for x in g]
                    for i, s in enumerate(skip):
                        if s:
                            d = abs(cv[i] - lv[i])
                            sensitive_total += 1
                            sensitive_moved += d > args.rtol * abs(lv[i]) + 1e-12
                            sensitive_max = max(sensitive_max, d)
            r = rel_l2(cv, lv, skip)
            n_tensors += 1
            file_worst = max(file_worst, r)
            if r > worst[0]:
                worst = (r, f"{f}:{name}")
            if not r <= args.rtol:
                failures.append(f"{f}: {name} is {r:.3g} (relative L2) from the local step's (bound {args.rtol:g})")
        print(f"  {f}.safetensors: {n_tensors} float tensors, worst relative L2 {file_worst:.3g}")
    if sensitive_max > 2 * lr:
        failures.append(f"a weight with |g| < 100 eps moved {sensitive_max:.3g} apart, more than two Adam steps "
                        f"(2 lr = {2 * lr:g})")

    loss_note = ""
    if args.losses:
        rows = []
        for path in args.losses:
            try:
                with open(path) as fh:
                    head = fh.readline().strip().split(",")
                    first = fh.readline().strip().split(",")
                rows.append(dict(zip(head, first)))
            except OSError as e:
                failures.append(f"cannot read {path}: {e}")
        if len(rows) == 2:
            worst_loss = 0.0
            for key in ("d_loss", "g_loss", "d_real", "d_fake"):
                try:
                    a, b = float(rows[1][key]), float(rows[0][key])
                except (KeyError, ValueError):
                    failures.append(f"losses: no {key} in the first row of both files")
                    continue
                e = abs(a - b) / max(abs(b), 1e-6)
                worst_loss = max(worst_loss, e)
                if abs(a - b) > args.rtol * abs(b) + 1e-6:
                    failures.append(f"losses: {key} {a:.7g} (cluster) against {b:.7g} (local)")
            loss_note = f" losses_rel={worst_loss:.3g}"

    print(f"  worst tensor: {worst[1]} at {worst[0]:.3g} (relative L2, bound {args.rtol:g}); "
          f"{sensitive_total} weights with |g| < 100 eps, {sensitive_moved} of them apart by more than "
          f"rtol, at most {sensitive_max / lr:.2g} lr")
    for fail in failures[:10]:
        print(f"  FAILED: {fail}")
    if len(failures) > 10:
        print(f"  ... and {len(failures) - 10} more")
    print(f"RESULT compare={'ok' if not failures else 'FAILED'} worst_rel_l2={worst[0]:.3g} "
          f"worst_tensor={worst[1]} rtol={args.rtol:g} adam_sensitive={sensitive_total} "
          f"adam_sensitive_moved={sensitive_moved} adam_sensitive_max_lr={sensitive_max / lr:.3g}{loss_note} "
          f"failures={len(failures)}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
