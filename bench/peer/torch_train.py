#!/usr/bin/env python3
"""gannf-train's peer in PyTorch on real data: the DCGAN and the step of
bench/peer/torch_step.py (imported, not copied) trained on Fashion-MNIST, the
whole training set held on the device as uint8 and each batch converted there.

The images are prepared as gannf prepares them (src/data/image_transform.cpp):
torchvision's Resize(S) with Pillow's bilinear filter in fixed point, each
pass rounded to uint8 (horizontal first, as Pillow does for these shapes),
CenterCrop(S), then x / 127.5 - 1. The resize runs once, before any timing, on
the device in float64 (exact: the fixed-point sums are integers below 2^53).

Timing: --warmup steps first (untimed), then --steps steps in a row (a new
seeded permutation at each epoch's end), with the device synchronised before
and after. Batches are drawn with index_select from the permutation, the noise
with torch.randn on the device: a plain training loop with the data already
on the GPU, no loader. --math fp32 turns TF32 off (cuDNN and matmul), the
precision of gannf's --backend cuda; --math default leaves PyTorch's default
(cuDNN may use TF32 tensor cores for FP32 convolutions).

Prints a line in the shape of torch_step.py's:
  RESULT impl=torch-2.x device=cuda data=fashion-mnist image=64 nc=1 batch=128 math=fp32 images_per_s=... steps=...
"""
import argparse
import gzip
import os
import struct
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_step import discriminator, gan_step, generator, init_dcgan  # noqa: E402


def find_train_images(folder):
    """The training split's IDX image file in folder (or folder/raw), as
    gannf's find_idx picks it: a train* name with idx3-ubyte, the
    uncompressed one when both are there."""
    if os.path.isfile(folder):
        return folder
    for d in (folder, os.path.join(folder, "raw")):
        if not os.path.isdir(d):
            continue
        names = sorted(n for n in os.listdir(d)
                       if n.startswith("train") and "idx3-ubyte" in n and os.path.isfile(os.path.join(d, n)))
        if names:
            plain = [n for n in names if not n.endswith(".gz")]
            return os.path.join(d, (plain or names)[0])
    sys.exit(f"error: no train-*-idx3-ubyte[.gz] file in {folder}")


def read_idx_images(path, limit=0):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        if magic != 0x803:
            sys.exit(f"error: {path}: not an IDX image file (magic {magic:#010x})")
        if limit:
            n = min(n, limit)
        data = f.read(n * rows * cols)
    n = len(data) // (rows * cols)
    return torch.frombuffer(bytearray(data[:n * rows * cols]), dtype=torch.uint8).view(n, rows, cols)


PRECISION_BITS = 32 - 8 - 2  # Pillow's Resample.c


def pil_bilinear_matrix(in_size, out_size):
    """(out_size, in_size) integer weights of Pillow's bilinear resampling
    (precompute_coeffs + normalize_coeffs_8bpc), as compute_coeffs in
    src/data/image_transform.cpp computes them."""
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    m = torch.zeros(out_size, in_size, dtype=torch.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)   # C's (int): toward zero
        xmax = min(int(center + support + 0.5), in_size) - xmin
        w = []
        for x in range(xmax):
            t = abs((x + xmin - center + 0.5) * ss)
            w.append(1.0 - t if t < 1.0 else 0.0)
        ww = sum(w)
        for x in range(xmax):
            k = w[x] / ww if ww != 0.0 else w[x]
            v = k * (1 << PRECISION_BITS)
            m[xx, x + xmin] = int(-0.5 + v) if v < 0 else int(0.5 + v)
    return m


def resample_u8(x, m, dim):
    """One Pillow pass along dim (2: width, 1: height) of (n, h, w) float64
    holding uint8 values; the result is rounded to uint8 as Pillow does."""
    acc = torch.matmul(x, m.t()) if dim == 2 else torch.matmul(m, x)
    return torch.floor((acc + (1 << (PRECISION_BITS - 1))) / (1 << PRECISION_BITS)).clamp_(0, 255)


def transform_like_gannf(images, s, device):
    """(n, h, w) uint8 -> (n, s, s) uint8: Resize(s) + CenterCrop(s) as gannf."""
    n, h, w = images.shape
    shorter, longer = min(w, h), max(w, h)
    new_long = int(float(s * longer) / shorter)
    rw, rh = (s, new_long) if w <= h else (new_long, s)
    out = torch.empty(n, s, s, dtype=torch.uint8, device=device)
    mh = pil_bilinear_matrix(w, rw).to(device) if rw != w else None
    mv = pil_bilinear_matrix(h, rh).to(device) if rh != h else None
    horizontal_first = not (h - rh > 0 and h - rh > (w - rw) * 2)

    def crop_offset(size):  # Python's round(): half to even, as center_crop_offset
        return int(round((size - s) / 2.0))

    top, left = crop_offset(rh), crop_offset(rw)
    for i in range(0, n, 4096):  # chunks: float64 copies of 4096 images at a time
        x = images[i:i + 4096].to(device, torch.float64)
        passes = [(mh, 2), (mv, 1)] if horizontal_first else [(mv, 1), (mh, 2)]
        for m, dim in passes:
            if m is not None:
                x = resample_u8(x, m, dim)
        out[i:i + 4096] = x[:, top:top + s, left:left + s].to(torch.uint8)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="Fashion-MNIST folder (train-images-idx3-ubyte[.gz]) or the file")
    ap.add_argument("--image-size", type=int, default=64, choices=(32, 64))
    ap.add_argument("--nc", type=int, default=1, choices=(1, 3), help="3: the grey image replicated, as gannf")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--nz", type=int, default=100)
    ap.add_argument("--f", type=int, default=64, help="ngf = ndf")
    ap.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    ap.add_argument("--math", default="fp32", choices=("fp32", "default", "bf16"),
                    help="fp32: TF32 off; default: PyTorch's default (TF32 convolutions in cuDNN); "
                         "bf16: the forward passes under torch.autocast(bfloat16)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads on the CPU (0: PyTorch's choice)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    ap.add_argument("--steps", type=int, default=0, help="timed steps (0: one epoch's worth)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N images (tests)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.batch < 2:
        sys.exit("error: --batch must be at least 2 (batch norm)")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but torch sees no CUDA device")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.math == "fp32":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device(args.device)
    torch.manual_seed(args.seed)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    path = find_train_images(args.data)
    raw = read_idx_images(path, args.limit)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    data = transform_like_gannf(raw, args.image_size, dev).unsqueeze(1)  # (n, 1, S, S) uint8 on the device
    if args.nc == 3:
        data = data.expand(-1, 3, -1, -1).contiguous()
    sync()
    prep_s = time.perf_counter() - t0
    N, B, S = data.shape[0], args.batch, args.image_size
    steps_per_epoch = N // B
    if steps_per_epoch == 0:
        sys.exit(f"error: {N} images, fewer than one batch of {B}")
    timed = args.steps or steps_per_epoch

    G = generator(S, args.nz, args.f, args.nc).to(dev)
    D = discriminator(S, args.f, args.nc).to(dev)
    G.apply(init_dcgan)
    D.apply(init_dcgan)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    step = gan_step(G, D, opt_g, opt_d, torch.bfloat16 if args.math == "bf16" else None)
    ones = torch.ones(B, device=dev)
    zeros = torch.zeros(B, device=dev)
    gen = torch.Generator(device=dev)
    gen.manual_seed(args.seed)
    state = {"perm": torch.randperm(N, device=dev, generator=gen), "pos": 0}

    def train_step():
        if state["pos"] == steps_per_epoch:
            state["perm"] = torch.randperm(N, device=dev, generator=gen)
            state["pos"] = 0
        idx = state["perm"][state["pos"] * B:(state["pos"] + 1) * B]
        state["pos"] += 1
        real = data.index_select(0, idx).to(torch.float32).div_(127.5).sub_(1.0)
        noise = torch.randn(B, args.nz, 1, 1, device=dev, generator=gen)
        return step(real, noise, ones, zeros)

    for _ in range(args.warmup):
        train_step()
    sync()
    t0 = time.perf_counter()
    for _ in range(timed):
        loss_d, loss_g = train_step()
    sync()
    secs = time.perf_counter() - t0
    ips = timed * B / secs
    print(f"# torch {torch.__version__}, {dev.type}"
          f"{' ' + torch.cuda.get_device_name(dev) if dev.type == 'cuda' else ''}, {N} images {S}x{S}x{args.nc} "
          f"from {path}: read in {load_s:.1f} s, resized on the device in {prep_s:.1f} s; "
          f"{timed} steps of {B} after {args.warmup} warm-up steps in {secs:.2f} s; "
          f"last step D {loss_d.item():.3f} G {loss_g.item():.3f}; cuDNN TF32 {torch.backends.cudnn.allow_tf32}",
          file=sys.stderr)
    print(f"RESULT impl=torch-{torch.__version__.split('+')[0]} device={dev.type} data=fashion-mnist "
          f"image={S} nc={args.nc} batch={B} math={args.math} images_per_s={ips:.1f} steps={timed} "
          f"warmup={args.warmup} seconds={secs:.2f} images={N}", flush=True)


if __name__ == "__main__":
    main()
