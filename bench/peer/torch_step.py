#!/usr/bin/env python3
"""Times gannf's training step in PyTorch: the peer figure for bench_step.

The model is the reference DCGAN exactly as src/nn/dcgan.h describes it
(bias-free convolutions, BN, ReLU / LeakyReLU(0.2), Tanh; D ends in logits and
the loss is BCE-with-logits), and the step is gannf's "simultaneous" one:

  fake = G(z)
  D on real, label 1, backward            -> D's gradients
  D on fake, ONE forward (fake not detached)
  D-fake loss (label 0): autograd.grad w.r.t. D's parameters, added to D's
  G loss (label 1):      autograd.grad w.r.t. G's parameters
  Adam on D, Adam on G (lr 2e-4, betas (0.5, 0.999))

Both nets' gradients are taken against the same weights, as in GanStep.

Prints one line in the same shape as bench_step's RESULT lines:
  RESULT impl=torch-2.x device=cpu image=64 nc=3 batch=64 threads=2 images_per_s=... reps=...
"""
import argparse
import contextlib
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def generator(image_size, nz, f, nc):
    stages = 3 if image_size == 64 else 2
    mult = 1 << stages
    layers = [nn.ConvTranspose2d(nz, mult * f, 4, 1, 0, bias=False),
              nn.BatchNorm2d(mult * f), nn.ReLU(True)]
    for _ in range(stages):
        layers += [nn.ConvTranspose2d(mult * f, mult * f // 2, 4, 2, 1, bias=False),
                   nn.BatchNorm2d(mult * f // 2), nn.ReLU(True)]
        mult //= 2
    layers += [nn.ConvTranspose2d(f, nc, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


def discriminator(image_size, f, nc):
    stages = 3 if image_size == 64 else 2
    layers = [nn.Conv2d(nc, f, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
    mult = 1
    for _ in range(stages):
        layers += [nn.Conv2d(mult * f, 2 * mult * f, 4, 2, 1, bias=False),
                   nn.BatchNorm2d(2 * mult * f), nn.LeakyReLU(0.2, True)]
        mult *= 2
    layers += [nn.Conv2d(mult * f, 1, 4, 1, 0, bias=False)]  # logits
    return nn.Sequential(*layers)


def init_dcgan(m):
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def gan_step(G, D, opt_g, opt_d, autocast=None):
    """gannf's simultaneous step on G and D as a function step(real, noise,
    ones, zeros) (also bench/peer/torch_train.py's). autocast: None, or a
    dtype (torch.bfloat16) for the forward passes under torch.autocast --
    PyTorch's mixed precision: low-precision operands, FP32 weights, FP32
    Adam, backward outside the autocast region as PyTorch recommends."""
    g_params, d_params = list(G.parameters()), list(D.parameters())

    def forward_ctx(device):
        if autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=autocast)

    def step(real, noise, ones, zeros):
        opt_d.zero_grad()
        opt_g.zero_grad()
        with forward_ctx(real.device):
            fake = G(noise)
            loss_real = F.binary_cross_entropy_with_logits(D(real).view(-1).float(), ones)
        loss_real.backward()
        with forward_ctx(real.device):
            out_fake = D(fake).view(-1).float()
            loss_fake = F.binary_cross_entropy_with_logits(out_fake, zeros)
            loss_g = F.binary_cross_entropy_with_logits(out_fake, ones)
        for p, g in zip(d_params, torch.autograd.grad(loss_fake, d_params, retain_graph=True)):
            p.grad += g
        for p, g in zip(g_params, torch.autograd.grad(loss_g, g_params)):
            p.grad = g
        opt_d.step()
        opt_g.step()
        return loss_real + loss_fake, loss_g

    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image-size", type=int, default=64, choices=(32, 64))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--nc", type=int, default=3, choices=(1, 3))
    ap.add_argument("--nz", type=int, default=100)
    ap.add_argument("--f", type=int, default=64, help="ngf = ndf")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--reps", type=int, default=10,
                    help="timed repetitions; the median is reported")
    ap.add_argument("--steps", type=int, default=2, help="steps per repetition")
    ap.add_argument("--autocast", default="none", choices=("none", "bf16"),
                    help="bf16: the forward passes under torch.autocast(bfloat16), PyTorch's "
                         "mixed precision (what gannf --backend cuda-bf16 is compared with)")
    args = ap.parse_args()
    if args.batch < 2:
        sys.exit("error: --batch must be at least 2 (batch norm)")

    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but torch sees no CUDA device")
    dev = torch.device(args.device)
    torch.manual_seed(0)

    G = generator(args.image_size, args.nz, args.f, args.nc).to(dev)
    D = discriminator(args.image_size, args.f, args.nc).to(dev)
    G.apply(init_dcgan)
    D.apply(init_dcgan)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    gan = gan_step(G, D, opt_g, opt_d, torch.bfloat16 if args.autocast == "bf16" else None)

    B, S = args.batch, args.image_size
    real = torch.rand(B, args.nc, S, S, device=dev) * 2 - 1
    noise = torch.randn(B, args.nz, 1, 1, device=dev)
    ones = torch.ones(B, device=dev)
    zeros = torch.zeros(B, device=dev)

    def step():
        gan(real, noise, ones, zeros)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    rates = []
    # Share of the cores held while timed (CPU time / wall / threads), as
    # bench_step reports it: well below 1 means other work slowed us down.
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(args.reps):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync()
        rates.append(B * args.steps / (time.perf_counter() - t0))
    share = (time.process_time() - cpu0) / ((time.perf_counter() - wall0) * torch.get_num_threads())

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"# torch {torch.__version__}, {dev.type}, {torch.get_num_threads()} threads, "
          f"images/s min {min(rates):.1f} max {max(rates):.1f}", file=sys.stderr)
    print(f"RESULT impl=torch-{torch.__version__.split('+')[0]} device={dev.type} "
          f"image={S} nc={args.nc} batch={B} threads={torch.get_num_threads()} "
          f"images_per_s={statistics.median(rates):.1f} reps={args.reps} peak_rss_mb={rss_mb:.0f} "
          f"cpu_share={share:.2f} autocast={args.autocast}")


if __name__ == "__main__":
    main()
