#!/usr/bin/env python3
"""Writes the PyTorch parity fixtures that tests/test_parity.cpp replays.

Run by a developer after a change to the model's definition, never by CI:

    python3 tools/make_fixtures.py            # writes tests/fixtures/*.safetensors

Needs torch, numpy and safetensors. For each of four configurations (f = ngf =
ndf = 8, nz = 16, batch 4; image size 32 or 64; 1 or 3 channels) it builds the
reference DCGAN exactly as src/nn/dcgan.h describes it, sets its weights and
inputs from the fixed streams below, and does what GanStep::accumulate does in
its simultaneous mode:

    fake  = G(noise)                                   (train mode)
    out_r = D(real);  errD_real = BCEWithLogits(out_r, 1)
    out_f = D(fake);  errD_fake = BCEWithLogits(out_f, 0)   (one forward, not detached)
                      errG      = BCEWithLogits(out_f, 1)
    D grads = d(errD_real + errD_fake)/d(D params)   (nothing flows into G)
    G grads = d(errG)/d(G params)                    (nothing is written to D)

then Adam (lr 2e-4, betas (0.5, 0.999), eps 1e-8) on both, and a second such
step on new data with the updated weights.

The fixed tensors -- initial weights, images and noise -- are not stored:
tests/test_parity.cpp draws the same numbers from the same streams
(fixed_uniform: SplitMix64 over FNV-1a of the tensor's name, 24 random bits a
value, turned into floats by exact arithmetic), so they cost the tree nothing.
A stream is named "s<size>_c<nc>.<tensor>":
    G.<key>, D.<key>      conv weights (u - 0.5) / 16 (uniform, std 0.018 --
                          DCGAN's normal(0, 0.02) in spread); BN weights
                          1 + (u - 0.5) / 16 and biases (u - 0.5) / 16; running
                          statistics PyTorch's defaults (0, 1, 0 batches)
    real, real2           (u - 0.5) * 2, images in [-1, 1), (B, nc, size, size)
    noise, noise2         (u - 0.5) * 4, (B, nz, 1, 1)

Tensors in each file (names after the nets' state_dict keys):
    fake                            G(noise), the full image batch
    out_r, out_f                    D's logits on real and on fake, (B, 1, 1, 1)
    errD_real, errD_fake, errG      the losses (scalars)
    G.grad.<param>, D.grad.<param>  gradients of step 1
    G.stats.<key>, D.stats.<key>    running stats and num_batches_tracked after step 1
    G.step1.<param>, D.step1.<param>  weights after the first Adam step (image size
                                    32 only: Adam is elementwise, the net's size
                                    adds nothing to its check)
    step2.errD_real, step2.errD_fake, step2.errG   losses of step 2
    G.grad2.<param>, D.grad2.<param>  gradients of step 2 (image size 32 only)
    G.stats2.<key>, D.stats2.<key>  running stats after step 2
    G.step2.<param>, D.step2.<param>  weights after the second Adam step (size 32 only)
    alt.*                           (image size 32, 1 channel only) PyTorch's DCGAN
                                    example's alternating step from the initial
                                    state on real/noise: D(real) and D(fake.detach())
                                    backward, D's Adam step, then D(fake) against
                                    the updated D for G:
      alt.errG, alt.D_G_z2          G's loss and mean D(G(z)) after D's update
      alt.G.grad.<param>            G's gradients against the updated D
      alt.D.step1.<param>           D's weights after its Adam step
      alt.D.stats.<key>             D's running stats after its three forwards
    <P>.act.main.<i>...             the output of every module of the step-1
                                    forwards, P = G, D_real, D_fake (see --acts)

Activations: with --acts full, <P>.act.main.<i> holds the whole tensor. The
default, --acts summary, keeps the fixtures small: per channel the mean and the
mean of squares (F64, computed in float64 from the float32 activation) in
<P>.act.main.<i>.mean / .sqmean, and every stride-th element of the flattened
tensor in .sample with the stride in .stride (I64). The final outputs (fake,
out_r, out_f) are stored whole either way; the activations only locate a
divergence, layer by layer.

It also writes tests/fixtures/safetensors_golden.safetensors, a small file
in every dtype the codec converts, serialised by the reference implementation,
so that tests/test_safetensors.cpp can check that gannf writes the same bytes.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

NZ, F_WIDTH, BATCH = 16, 8, 4
CONFIGS = [(32, 1), (32, 3), (64, 1), (64, 3)]  # (image size, channels)
ADAM = dict(lr=2e-4, betas=(0.5, 0.999), eps=1e-8)
SAMPLE = 256  # elements kept per activation in summary mode
# Step 2's gradients let the test run PyTorch's own gradients through our Adam
# at step 2, where beta1 and beta2 matter (at step 1 the bias corrections cancel
# them). Stored for the small configurations only, to keep the files small.
GRAD2_SIZES = (32,)
# The alternating step's tensors (G's gradients against the updated D, D's
# weights and statistics): one small configuration is enough to pin the order.
ALT_CONFIGS = ((32, 1),)
# Adam's weights after steps 1 and 2: the small configurations only.
ADAM_SIZES = (32,)
# What the fixtures may weigh in the tree. The 64x64 nets carry about 105k
# parameters at f = 8; stored whole, their initial weights, gradients, the
# weights after two Adam steps and the images came to 5.9 MB. Drawing the
# fixed tensors from streams and keeping Adam's results for the 32x32 nets
# only brings it under 3 MB with summarised activations.
BUDGET_MB = 3.0

MASK64 = (1 << 64) - 1


def fnv1a64(text):
    h = 0xCBF29CE484222325
    for b in text.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & MASK64
    return h


def fixed_uniform(name, n):
    """n numbers u in [0, 1) with 24 random bits each: SplitMix64's output
    function over seed + i * golden (i = 1..n), seed = FNV-1a of the name. The
    same numbers as fixed_uniform in tests/test_parity.cpp."""
    with np.errstate(over="ignore"):
        i = np.arange(1, n + 1, dtype=np.uint64)
        z = np.uint64(fnv1a64(name)) + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def fixed_tensor(name, shape, scale, offset=0.0):
    """offset + (u - 0.5) * scale in float64 (exact for these scales), rounded
    to float32 once."""
    n = int(np.prod(shape)) if len(shape) else 1
    v = offset + (fixed_uniform(name, n) - 0.5) * scale
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def set_fixed(net, tag, prefix):
    """The net's weights from the streams; running statistics left at their
    defaults."""
    with torch.no_grad():
        for m_name, m in net.named_modules():
            key = f"{tag}.{prefix}.{m_name}"
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.weight.copy_(fixed_tensor(key + ".weight", tuple(m.weight.shape), 1 / 16))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(fixed_tensor(key + ".weight", tuple(m.weight.shape), 1 / 16, 1.0))
                m.bias.copy_(fixed_tensor(key + ".bias", tuple(m.bias.shape), 1 / 16))


class Net(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.main = nn.Sequential(*layers)

    def forward(self, x):
        return self.main(x)


def generator(size, nz, f, nc):
    mult = 8 if size == 64 else 4  # 32x32 has one stride-2 stage fewer
    layers = [nn.ConvTranspose2d(nz, mult * f, 4, 1, 0, bias=False),
              nn.BatchNorm2d(mult * f), nn.ReLU()]
    while mult > 1:
        layers += [nn.ConvTranspose2d(mult * f, mult // 2 * f, 4, 2, 1, bias=False),
                   nn.BatchNorm2d(mult // 2 * f), nn.ReLU()]
        mult //= 2
    layers += [nn.ConvTranspose2d(f, nc, 4, 2, 1, bias=False), nn.Tanh()]
    return Net(layers)


def discriminator(size, nc, f):
    layers = [nn.Conv2d(nc, f, 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
    mult, top = 1, (8 if size == 64 else 4)
    while mult < top:
        layers += [nn.Conv2d(mult * f, 2 * mult * f, 4, 2, 1, bias=False),
                   nn.BatchNorm2d(2 * mult * f), nn.LeakyReLU(0.2)]
        mult *= 2
    # The reference's Sigmoid is folded into BCE-with-logits.
    layers += [nn.Conv2d(top * f, 1, 4, 1, 0, bias=False)]
    return Net(layers)


class Recorder:
    """Forward hooks that clone every module's output under the current prefix
    (clone at once: an in-place activation would overwrite it later)."""

    def __init__(self, nets):
        self.prefix, self.acts = None, {}
        for net in nets:
            for i, m in enumerate(net.main):
                m.register_forward_hook(self._hook(i))

    def _hook(self, i):
        def hook(module, inp, out):
            if self.prefix is not None:
                self.acts[f"{self.prefix}.act.main.{i}"] = out.detach().clone()
        return hook


def gan_grads(G, D, real, noise, rec=None):
    """One GanStep::accumulate over the whole batch (scale 1/B = the mean)."""
    def fwd(net, x, prefix):
        if rec is not None:
            rec.prefix = prefix
        y = net(x)
        if rec is not None:
            rec.prefix = None
        return y

    fake = fwd(G, noise, "G")
    out_r = fwd(D, real, "D_real")
    ones = torch.ones(real.shape[0], dtype=real.dtype)
    zeros = torch.zeros(real.shape[0], dtype=real.dtype)
    errD_real = F.binary_cross_entropy_with_logits(out_r.view(-1), ones)
    out_f = fwd(D, fake, "D_fake")  # not detached: errG goes back through it
    errD_fake = F.binary_cross_entropy_with_logits(out_f.view(-1), zeros)
    errG = F.binary_cross_entropy_with_logits(out_f.view(-1), ones)
    gD = torch.autograd.grad(errD_real + errD_fake, list(D.parameters()), retain_graph=True)
    gG = torch.autograd.grad(errG, list(G.parameters()))
    return dict(fake=fake.detach(), out_r=out_r.detach(), out_f=out_f.detach(),
                errD_real=errD_real.detach(), errD_fake=errD_fake.detach(),
                errG=errG.detach(), gG=gG, gD=gD)


def adam_step(opt, net, grads):
    for p, g in zip(net.parameters(), grads):
        p.grad = g.clone()
    opt.step()
    opt.zero_grad(set_to_none=True)


def params_of(net, prefix):
    return {f"{prefix}.{k}": v.detach().clone() for k, v in net.named_parameters()}


def stats_of(net, prefix):
    return {f"{prefix}.{k}": v.detach().clone() for k, v in net.named_buffers()}


def summarise(name, x):
    """Per-channel mean and mean of squares, and a strided sample."""
    xd = x.double()
    dims = [0] + list(range(2, x.dim()))
    flat = x.reshape(-1)
    stride = max(1, flat.numel() // SAMPLE)
    return {
        f"{name}.mean": xd.mean(dim=dims),
        f"{name}.sqmean": (xd * xd).mean(dim=dims),
        f"{name}.sample": flat[::stride].clone(),
        f"{name}.stride": torch.tensor([stride], dtype=torch.int64),
    }


def run(size, nc, dtype, acts_mode):
    """All the fixture's tensors for one configuration, in `dtype` (the fixed
    tensors are float32 numbers either way)."""
    tag = f"s{size}_c{nc}"
    G = generator(size, NZ, F_WIDTH, nc)
    D = discriminator(size, nc, F_WIDTH)
    set_fixed(G, tag, "G")
    set_fixed(D, tag, "D")
    G, D = G.to(dtype).train(), D.to(dtype).train()
    B = BATCH
    real = fixed_tensor(f"{tag}.real", (B, nc, size, size), 2.0).to(dtype)
    noise = fixed_tensor(f"{tag}.noise", (B, NZ, 1, 1), 4.0).to(dtype)
    real2 = fixed_tensor(f"{tag}.real2", (B, nc, size, size), 2.0).to(dtype)
    noise2 = fixed_tensor(f"{tag}.noise2", (B, NZ, 1, 1), 4.0).to(dtype)

    out = {}
    if (size, nc) in ALT_CONFIGS:
        # On copies, so that the simultaneous steps below start from the same state.
        Ga, Da = generator(size, NZ, F_WIDTH, nc).to(dtype), discriminator(size, nc, F_WIDTH).to(dtype)
        Ga.load_state_dict(G.state_dict())
        Da.load_state_dict(D.state_dict())
        out.update(alternating_step(Ga.train(), Da.train(), real, noise))

    rec = Recorder([G, D])
    s1 = gan_grads(G, D, real, noise, rec)
    for k in ("fake", "out_r", "out_f", "errD_real", "errD_fake", "errG"):
        out[k] = s1[k]
    for (name, _), g in zip(G.named_parameters(), s1["gG"]):
        out[f"G.grad.{name}"] = g
    for (name, _), g in zip(D.named_parameters(), s1["gD"]):
        out[f"D.grad.{name}"] = g
    out.update(stats_of(G, "G.stats"))
    out.update(stats_of(D, "D.stats"))
    for name, a in rec.acts.items():
        if acts_mode == "full":
            out[name] = a
        else:
            out.update(summarise(name, a))

    optG = torch.optim.Adam(G.parameters(), foreach=False, **ADAM)
    optD = torch.optim.Adam(D.parameters(), foreach=False, **ADAM)
    adam_step(optG, G, s1["gG"])
    adam_step(optD, D, s1["gD"])
    if size in ADAM_SIZES:
        out.update(params_of(G, "G.step1"))
        out.update(params_of(D, "D.step1"))

    s2 = gan_grads(G, D, real2, noise2)
    for k in ("errD_real", "errD_fake", "errG"):
        out[f"step2.{k}"] = s2[k]
    if size in GRAD2_SIZES:
        for (name, _), g in zip(G.named_parameters(), s2["gG"]):
            out[f"G.grad2.{name}"] = g
        for (name, _), g in zip(D.named_parameters(), s2["gD"]):
            out[f"D.grad2.{name}"] = g
    out.update(stats_of(G, "G.stats2"))
    out.update(stats_of(D, "D.stats2"))
    adam_step(optG, G, s2["gG"])
    adam_step(optD, D, s2["gD"])
    if size in ADAM_SIZES:
        out.update(params_of(G, "G.step2"))
        out.update(params_of(D, "D.step2"))
    return {k: v.contiguous() for k, v in out.items()}


def alternating_step(G, D, real, noise):
    """PyTorch's DCGAN example step (gannf-train --mode alternating), from the
    nets' current state: D on real and on the detached fakes, D's Adam step,
    then G's gradients through the updated D."""
    ones = torch.ones(real.shape[0], dtype=real.dtype)
    zeros = torch.zeros(real.shape[0], dtype=real.dtype)
    optD = torch.optim.Adam(D.parameters(), foreach=False, **ADAM)
    D.zero_grad()
    errD_real = F.binary_cross_entropy_with_logits(D(real).view(-1), ones)
    errD_real.backward()
    fake = G(noise)
    errD_fake = F.binary_cross_entropy_with_logits(D(fake.detach()).view(-1), zeros)
    errD_fake.backward()
    optD.step()
    G.zero_grad()
    out = D(fake).view(-1)
    errG = F.binary_cross_entropy_with_logits(out, ones)
    errG.backward()
    out_ = {"alt.errG": errG.detach(), "alt.D_G_z2": torch.sigmoid(out.detach()).mean()}
    out_.update({f"alt.G.grad.{k}": p.grad.detach().clone() for k, p in G.named_parameters()})
    out_.update(params_of(D, "alt.D.step1"))
    out_.update(stats_of(D, "alt.D.stats"))
    return out_


def sort_metadata(path):
    """The reference writer orders __metadata__ by a randomly seeded hash map, so
    two runs differ in their header bytes. Rewrite it sorted (what gannf's
    writer does) so that a regenerated fixture is byte-identical when nothing
    changed. Same keys and values, so the header keeps its length."""
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        text = f.read(n).decode("utf-8")
        header = json.loads(text)
        meta = header.pop("__metadata__", None)
        if meta:
            header = {"__metadata__": dict(sorted(meta.items())), **header}
        new = json.dumps(header, separators=(",", ":"), ensure_ascii=False)
        new += " " * (n - len(new.encode("utf-8")))
        assert len(new.encode("utf-8")) == n and json.loads(new) == json.loads(text)
        f.seek(8)
        f.write(new.encode("utf-8"))


def max_rel(a, b):
    """Largest |a-b| / (1e-5 + 1e-4 |b|): the share of test_parity's tolerance used."""
    a, b = a.double(), b.double()
    return ((a - b).abs() / (1e-5 + 1e-4 * b.abs())).max().item() if a.numel() else 0.0


def write_golden(path):
    """Every dtype the codec converts, with values whose bytes are easy to state."""
    t = {
        "weights": torch.tensor([[-1.0, -0.5, 0.0], [0.5, 1.0, 1.5]], dtype=torch.float32),
        "wide": torch.tensor([1e-300, -2.5, 3.141592653589793], dtype=torch.float64),
        "steps": torch.tensor([0, -1, 2**40, -2**63], dtype=torch.int64),
        "scalar": torch.tensor(3.25, dtype=torch.float32),
        "empty": torch.zeros(0, 2, dtype=torch.float32),
        "half": torch.tensor([1.5, -0.25, 65504.0], dtype=torch.float16),
        "brain": torch.tensor([1.0, -2.0], dtype=torch.bfloat16),
        "small": torch.tensor([0, 127, 255], dtype=torch.uint8),
        "count": torch.tensor([-7], dtype=torch.int32),
    }
    save_file(t, path, metadata={"format": "pt"})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.normpath(os.path.join(here, "..", "tests", "fixtures")),
                    help="output folder (default: tests/fixtures)")
    ap.add_argument("--acts", choices=["summary", "full"], default="summary",
                    help="how to store intermediate activations (default: summary)")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)

    total = 0
    for size, nc in CONFIGS:
        ref = run(size, nc, torch.float32, args.acts)
        # The same step in float64: how far float32 itself is from exact, i.e.
        # how much of the C++ tolerance float rounding alone can use.
        exact = run(size, nc, torch.float64, args.acts)
        worst = max(((max_rel(ref[n], exact[n]), n) for n in ref
                     if ref[n].is_floating_point()), key=lambda t: t[0])
        meta = {
            "format": "pt",
            "generator": "tools/make_fixtures.py",
            "torch": torch.__version__,
            "image_size": str(size), "nc": str(nc), "nz": str(NZ),
            "ngf": str(F_WIDTH), "ndf": str(F_WIDTH), "batch": str(BATCH),
            "fixed": "fixed_uniform streams s<size>_c<nc>.<name>", "acts": args.acts,
            "adam": "lr=2e-4 betas=(0.5,0.999) eps=1e-8",
            "mode": "simultaneous",
        }
        path = os.path.join(args.out, f"dcgan_s{size}_c{nc}.safetensors")
        save_file(ref, path, metadata=meta)
        sort_metadata(path)
        back = load_file(path)
        assert all(torch.equal(back[n], ref[n]) for n in ref), "round trip failed"
        n = os.path.getsize(path)
        total += n
        print(f"{path}: {len(ref)} tensors, {n / 1e6:.3f} MB; float32 vs float64 "
              f"uses {worst[0]:.3f} of the tolerance at worst ({worst[1]})")

    golden = os.path.join(args.out, "safetensors_golden.safetensors")
    write_golden(golden)
    total += os.path.getsize(golden)
    print(f"{golden}: {os.path.getsize(golden)} bytes")
    print(f"total {total / 1e6:.3f} MB")
    if total > BUDGET_MB * 1e6:
        print(f"warning: fixtures exceed the {BUDGET_MB} MB budget", file=sys.stderr)


if __name__ == "__main__":
    main()
