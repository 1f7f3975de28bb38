#!/usr/bin/env python3
"""Proves that PyTorch loads gannf's checkpoints: a developer-side check (needs
torch and safetensors; CI never runs it). Install them with

    python3 -m pip install -r tools/requirements-torch.txt

then

    python3 tools/torch_load_check.py CHECKPOINT [--gannf-generate build/tools/gannf-generate]

CHECKPOINT is what gannf-generate accepts (a run folder, a checkpoint folder
or a generator.safetensors), or a folder `gannf-generate export` wrote. The
script
  1. has gannf-generate write 16 noise vectors and its eval-mode images,
  2. builds the reference DCGAN generator in PyTorch (an nn.Sequential named
     `main`, as in tools/make_fixtures.py; for an exported folder, the
     Generator of the folder's own generator.py) and calls
     G.load_state_dict(safetensors.torch.load_file(path)) with strict=True,
  3. runs PyTorch's generator in eval mode on the same noise and compares.
Exits non-zero when loading fails or any pixel differs by more than 1e-4.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import generator  # noqa: E402  the reference architecture


def generator_file(path):
    if os.path.isfile(path):
        return path
    if os.path.isfile(os.path.join(path, "generator.safetensors")):
        return os.path.join(path, "generator.safetensors")
    with open(os.path.join(path, "checkpoints", "latest")) as f:
        return os.path.join(path, "checkpoints", f.read().strip(), "generator.safetensors")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--gannf-generate", default=os.path.join(here, "..", "build", "tools", "gannf-generate"))
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    path = generator_file(a.checkpoint)
    with safe_open(path, "pt") as f:
        cfg = json.loads(f.metadata()["gannf.config"])
    with tempfile.TemporaryDirectory() as tmp:
        dump = os.path.join(tmp, "dump.safetensors")
        subprocess.run([a.gannf_generate, "dump", "--checkpoint", path, "--seeds", "0-15", "--out", dump],
                       check=True, stdout=subprocess.DEVNULL)
        d = load_file(dump)
    torch.set_num_threads(1)
    shipped = os.path.join(os.path.dirname(os.path.abspath(path)), "generator.py")
    if os.path.isfile(shipped):  # an exported folder: the code it ships for its users
        sys.path.insert(0, os.path.dirname(shipped))
        from generator import Generator  # noqa: E402
        G = Generator(cfg["nz"], cfg["ngf"], cfg["nc"], cfg["image_size"])
        print(f"using the Generator of {shipped}")
    else:
        G = generator(cfg["image_size"], cfg["nz"], cfg["ngf"], cfg["nc"])
    missing = G.load_state_dict(load_file(path), strict=True)
    G.eval()
    with torch.no_grad():
        ours, theirs = d["images"], G(d["noise"])
    diff = (ours - theirs).abs().max().item()
    print(f"{path}: loaded into PyTorch's generator ({missing}); "
          f"max |gannf - torch| over {tuple(ours.shape)} = {diff:.3g} (tolerance {a.tol:g})")
    return 0 if diff <= a.tol else 1


if __name__ == "__main__":
    sys.exit(main())
