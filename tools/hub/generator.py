"""The DCGAN generator of this folder, in PyTorch (needs torch and safetensors).

    from generator import Generator
    G = Generator.from_folder(".")              # config.json + generator.safetensors
    images = G(torch.randn(16, G.nz, 1, 1))     # (16, nc, size, size), in [-1, 1]

or, from a shell in this folder:

    python generator.py --count 64 --seed 0 --out samples-torch.png

The network is the reference DCGAN generator, an nn.Sequential named `main`,
so the file's tensor names (main.0.weight, main.1.running_mean, ...) load
with strict=True. gannf-generate (C++) wrote this file next to the weights.
"""
import argparse
import json
import os
import struct
import zlib

import torch
from safetensors.torch import load_file
from torch import nn


class Generator(nn.Module):
    def __init__(self, nz=100, ngf=64, nc=3, image_size=64):
        super().__init__()
        if image_size not in (32, 64):
            raise ValueError("image_size must be 32 or 64")
        self.nz = nz
        mult = 8 if image_size == 64 else 4  # 32x32 has one stride-2 stage fewer
        layers = [nn.ConvTranspose2d(nz, mult * ngf, 4, 1, 0, bias=False), nn.BatchNorm2d(mult * ngf), nn.ReLU(True)]
        while mult > 1:
            layers += [nn.ConvTranspose2d(mult * ngf, mult // 2 * ngf, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(mult // 2 * ngf), nn.ReLU(True)]
            mult //= 2
        layers += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z):
        return self.main(z)

    @classmethod
    def from_folder(cls, folder="."):
        """The generator of an exported folder, in eval mode."""
        with open(os.path.join(folder, "config.json")) as f:
            cfg = json.load(f)
        g = cls(cfg["nz"], cfg["ngf"], cfg["nc"], cfg["image_size"])
        g.load_state_dict(load_file(os.path.join(folder, "generator.safetensors")), strict=True)
        return g.eval()


def write_png(path, images, cols=8):
    """A grid of (n, c, s, s) images in [-1, 1] as an 8-bit PNG (no PIL needed)."""
    n, c, s, _ = images.shape
    rows = (n + cols - 1) // cols
    grid = torch.zeros(c, rows * s, cols * s)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[:, r * s:(r + 1) * s, q * s:(q + 1) * s] = images[i]
    pix = ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).contiguous()
    raw = b"".join(b"\0" + bytes(pix[y].flatten().tolist()) for y in range(pix.shape[0]))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    colour = 0 if c == 1 else 2  # grey or RGB
    head = struct.pack(">IIBBBBB", pix.shape[1], pix.shape[0], 8, colour, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def main():
    ap = argparse.ArgumentParser(description="Sample the generator of this folder into a PNG grid.")
    ap.add_argument("--folder", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--count", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0, help="torch.manual_seed for the noise")
    ap.add_argument("--out", default="samples-torch.png")
    a = ap.parse_args()
    g = Generator.from_folder(a.folder)
    torch.manual_seed(a.seed)
    with torch.no_grad():
        images = g(torch.randn(a.count, g.nz, 1, 1))
    write_png(a.out, images)
    print(f"wrote {a.out} ({a.count} images)")


if __name__ == "__main__":
    main()
