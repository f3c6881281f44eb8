"""train:cfm's datasets in PyTorch: the 2-D toys of lib/data/toys.ts (same distributions,
drawn from torch's generator instead of flowgpu's Philox stream) and Fashion-MNIST from
Debian's dataset-fashion-mnist IDX files, scaled to [-1, 1] as lib/data/fashion_mnist.ts."""
import gzip
import math
import os

import numpy as np
import torch

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def _normals(n, g):
    return torch.randn(n, 2, generator=g)


def eight_gaussians(n, g, scale=5.0, std=0.1 ** 0.25):
    s = 1 / math.sqrt(2)
    centers = torch.tensor([[1, 0], [-1, 0], [0, 1], [0, -1], [s, s], [s, -s], [-s, s], [-s, -s]])
    idx = torch.randint(0, 8, (n,), generator=g)
    return scale * centers[idx] + std * _normals(n, g)


def moons(n, g, noise=0.2):
    th = math.pi * torch.rand(n, generator=g)
    outer = torch.rand(n, generator=g) < 0.5
    x = torch.where(outer, torch.cos(th), 1 - torch.cos(th))
    y = torch.where(outer, torch.sin(th), 0.5 - torch.sin(th))
    return 3 * (torch.stack([x, y], 1) + noise * _normals(n, g)) - 1


def checkerboard(n, g):
    u = torch.rand(n, 3, generator=g)
    x = 4 * u[:, 0] - 2
    y = u[:, 1] - 2 * torch.floor(u[:, 2] * 2) + torch.remainder(torch.floor(x), 2)
    return torch.stack([x, y], 1)


def spirals(n, g, noise=0.1):
    u = torch.rand(n, 4, generator=g)
    r = torch.sqrt(u[:, 0]) * 540 * 2 * math.pi / 360
    sgn = torch.where(u[:, 3] < 0.5, 1.0, -1.0)
    x = -torch.cos(r) * r + u[:, 1] * 0.5
    y = torch.sin(r) * r + u[:, 2] * 0.5
    return torch.stack([sgn * x, sgn * y], 1) / 3 + noise * _normals(n, g)


TOYS = {"8gaussians": eight_gaussians, "moons": moons, "checkerboard": checkerboard, "spirals": spirals,
        "gaussian": _normals}


def load_fashion_mnist(directory=FASHION_MNIST_DIR):
    """(images [n, 1, 28, 28] in [-1, 1], labels [n] long) of the training split."""
    img_path = os.path.join(directory, "train-images-idx3-ubyte.gz")
    lbl_path = os.path.join(directory, "train-labels-idx1-ubyte.gz")
    if not os.path.isfile(img_path):
        raise FileNotFoundError(f"{img_path} is missing: apt-get install dataset-fashion-mnist")
    with gzip.open(img_path) as f:
        img = np.frombuffer(f.read(), dtype=np.uint8)
    with gzip.open(lbl_path) as f:
        lbl = np.frombuffer(f.read(), dtype=np.uint8)
    n = (len(img) - 16) // 784
    x = torch.from_numpy(img[16:16 + n * 784].astype(np.float32) / 127.5 - 1).reshape(n, 1, 28, 28)
    return x, torch.from_numpy(lbl[8:8 + n].astype(np.int64))


class DataSource:
    """Batches x1 [B, ...] (and labels for labelled data) for one DDP rank: each rank draws
    its own batches from its own seeded generator."""

    def __init__(self, cfg, rank):
        self.name = cfg["dataset"]
        self.g = torch.Generator().manual_seed(int(cfg.get("seed", 0)) * 1000003 + 7919 * (rank + 1))
        if self.name == "fashion-mnist":
            self.images, self.labels = load_fashion_mnist()
        elif self.name not in TOYS:
            raise ValueError(f"unknown dataset {self.name!r} (expected fashion-mnist or one of {sorted(TOYS)})")

    def batch(self, b):
        if self.name == "fashion-mnist":
            idx = torch.randint(0, self.images.shape[0], (b,), generator=self.g)
            return self.images[idx], self.labels[idx]
        return TOYS[self.name](b, self.g), None
