#!/usr/bin/env python3
"""Makes the tiny image fixtures under tests/fixtures/data/ and the pixels that
torchvision's usual DCGAN pipeline gives for them, so test_data can check that
gannf's data transform matches it.

The reference pipeline is the one torchvision's ImageFolder/CelebA/MNIST use
with the DCGAN transforms, PIL path:

    img = Image.open(path).convert('L' if C == 1 else 'RGB')
    Compose([Resize(S), CenterCrop(S), ToTensor(), Normalize([0.5]*C, [0.5]*C)])

Developer-side only (the tests read the committed output):
    pip install torch torchvision pillow numpy
    python3 tools/make_data_fixtures.py [--out tests/fixtures/data]

Output: the images, expected/<name>_<S>x<S>x<C>.f32 (raw little-endian float32,
(C, S, S)) and manifest.json listing each case.
"""
import argparse
import json
import os

import numpy as np
from PIL import Image, ImageDraw
import torch
import torchvision
from torchvision import transforms as T


def reference(path, size, channels):
    img = Image.open(path)
    img = img.convert('L' if channels == 1 else 'RGB')
    t = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(),
                   T.Normalize([0.5] * channels, [0.5] * channels)])
    out = t(img).numpy().astype('<f4')
    assert out.shape == (channels, size, size), out.shape
    return out


def smooth_noise(rng, h, w, c, cells):
    """Low-frequency colour noise (bicubic-upscaled random grid)."""
    g = (rng.rand(cells, cells, c) * 255).astype(np.uint8)
    mode = 'RGB' if c == 3 else 'L'
    im = Image.fromarray(g if c == 3 else g[:, :, 0], mode).resize((w, h), Image.BICUBIC)
    return np.asarray(im)


def make_images(out, rng):
    # A CelebA-sized photo stand-in: smooth shading, hard edges and a little
    # noise, saved as a 4:2:0 JPEG like CelebA's.
    base = smooth_noise(rng, 218, 178, 3, 6).astype(np.int16)
    base += rng.randint(-6, 7, size=base.shape).astype(np.int16)
    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), 'RGB')
    d = ImageDraw.Draw(im)
    d.ellipse((40, 50, 140, 170), fill=(220, 180, 150))
    d.rectangle((10, 10, 60, 40), fill=(20, 40, 200))
    d.polygon([(120, 200), (170, 120), (175, 210)], fill=(250, 250, 30))
    d.line((0, 217, 177, 0), fill=(0, 0, 0), width=3)
    im.save(os.path.join(out, 'celeba_like.jpg'), quality=90)
    # The same JPEG as PIL (libjpeg-turbo) decodes it, stored losslessly: lets
    # the test check the resampling alone, exactly, apart from JPEG decoding.
    Image.open(os.path.join(out, 'celeba_like.jpg')).convert('RGB').save(
        os.path.join(out, 'celeba_like_pil_decoded.png'), optimize=True)

    # RGBA with alpha from 0 to 255 and colour under fully transparent pixels.
    rgb = smooth_noise(rng, 40, 50, 3, 4)
    a = np.tile(np.linspace(0, 255, 50).astype(np.uint8), (40, 1))
    a[:, :8] = 0
    Image.fromarray(np.dstack([rgb, a]), 'RGBA').save(os.path.join(out, 'rgba_50x40.png'))

    # Grayscale, 30x46: Resize(32) gives 32x49, and CenterCrop's top is
    # round(8.5) = 8 (Python rounds half to even).
    g = smooth_noise(rng, 46, 30, 1, 5)
    Image.fromarray(g, 'L').save(os.path.join(out, 'gray_30x46.png'))

    # An MNIST-like 28x28 digit: black background, white strokes, upscaled.
    m = Image.new('L', (28, 28), 0)
    d = ImageDraw.Draw(m)
    d.ellipse((7, 4, 21, 24), outline=255, width=3)
    d.line((9, 22, 20, 6), fill=180, width=2)
    m.save(os.path.join(out, 'mnist_like_28x28.png'))

    # A palette PNG and a 24-bit BMP.
    p = Image.fromarray(smooth_noise(rng, 24, 20, 3, 3), 'RGB').quantize(colors=16)
    p.save(os.path.join(out, 'palette_20x24.png'))
    Image.fromarray(smooth_noise(rng, 21, 33, 3, 4), 'RGB').save(os.path.join(out, 'rgb_33x21.bmp'))

    # Tall and nearly S wide: Resize(32) takes 34x200 to 32x188, and the
    # height shrinks by more than twice the width, so current Pillow runs its
    # vertical pass first (older Pillow always went horizontal first).
    t = smooth_noise(rng, 200, 34, 3, 7).astype(np.int16)
    t += rng.randint(-20, 21, size=t.shape).astype(np.int16)
    Image.fromarray(np.clip(t, 0, 255).astype(np.uint8), 'RGB').save(os.path.join(out, 'tall_34x200.png'))


CASES = [
    # image, S, C, lossless (a PNG/BMP: decoding is exact, so only resampling
    # can differ; a JPEG also carries decoder differences)
    ('celeba_like.jpg', 64, 3, False),
    ('celeba_like.jpg', 32, 1, False),
    ('celeba_like_pil_decoded.png', 64, 3, True),
    ('celeba_like_pil_decoded.png', 32, 1, True),
    ('rgba_50x40.png', 32, 3, True),
    ('rgba_50x40.png', 16, 1, True),
    ('gray_30x46.png', 32, 1, True),
    ('gray_30x46.png', 32, 3, True),
    ('mnist_like_28x28.png', 32, 1, True),
    ('palette_20x24.png', 16, 3, True),
    ('rgb_33x21.bmp', 16, 3, True),
    ('tall_34x200.png', 32, 3, True),
]


def check_luma(rng):
    """PIL's convert('L') is ITU-R 601-2 in 16-bit fixed point; gannf uses the
    same integer formula. Confirm it on random pixels."""
    px = rng.randint(0, 256, size=(64, 64, 3)).astype(np.uint8)
    got = np.asarray(Image.fromarray(px, 'RGB').convert('L')).astype(np.int64)
    p = px.astype(np.int64)
    want = (p[..., 0] * 19595 + p[..., 1] * 38470 + p[..., 2] * 7471 + 0x8000) >> 16
    assert (got == want).all(), 'PIL luma formula changed'


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument('--out', default=os.path.join(here, '..', 'tests', 'fixtures', 'data'))
    args = ap.parse_args()
    out = os.path.normpath(args.out)
    os.makedirs(os.path.join(out, 'expected'), exist_ok=True)
    rng = np.random.RandomState(1234)
    check_luma(rng)
    make_images(out, rng)
    cases = []
    for name, s, c, lossless in CASES:
        ref = reference(os.path.join(out, name), s, c)
        stem = os.path.splitext(name)[0]
        exp = 'expected/%s_%dx%dx%d.f32' % (stem, s, s, c)
        ref.tofile(os.path.join(out, exp))
        cases.append({'image': name, 'size': s, 'channels': c, 'expected': exp,
                      'lossless': lossless})
    manifest = {
        'pipeline': "Image.open(p).convert('L' if C == 1 else 'RGB'); Resize(S); "
                    "CenterCrop(S); ToTensor(); Normalize(0.5, 0.5)",
        'versions': {'torch': torch.__version__, 'torchvision': torchvision.__version__,
                     'pillow': Image.__version__},
        'cases': cases,
    }
    with open(os.path.join(out, 'manifest.json'), 'w') as f:
        json.dump(manifest, f, indent=1)
        f.write('\n')
    total = 0
    for root, _, files in os.walk(out):
        total += sum(os.path.getsize(os.path.join(root, x)) for x in files)
    print('wrote %d cases to %s (%.1f KB)' % (len(cases), out, total / 1024))


if __name__ == '__main__':
    main()
