#!/usr/bin/python3
"""Generate the PyTorch golden fixtures in tests/testdata/torch_*.safetensors.

Run by hand (Debian's python3-torch; use /usr/bin/python3 if a pyenv python shadows it):

    /usr/bin/python3 tasks/gen_fixtures.py

Weights and inputs are drawn in float32 (so the TypeScript side sees exactly the same
values), then every reference output and gradient is computed in float64 and stored as F32.
The safetensors files are written by hand (8-byte little-endian header length, JSON header,
raw little-endian bytes) so no safetensors package is needed.

Files:
  torch_mlp.safetensors   Linear(3,8)-GELU-Linear(8,8)-SiLU-Linear(8,2) (nn.Sequential names),
                          input [5,3], output, grads of (out**2).mean() w.r.t. weights and input.
  torch_attn.safetensors  A DiT block (facebookresearch/DiT DiTBlock: LayerNorm without affine,
                          eps 1e-6; multi-head self-attention; tanh-GELU MLP; adaLN-Zero
                          modulation) with NON-zero modulation weights; x [2,5,8], c [2,8].
  torch_dit.safetensors   A tiny DiT (input 4x4x1, patch 2, hidden 16, depth 2, 2 heads,
                          3 classes) with every weight random (no zero init), forward and grads.
  torch_optim.safetensors 8 steps of SGD (momentum, nesterov, weight decay), Adam (L2),
                          AdamW and RAdam on one parameter with fixed gradients.
"""
import json
import math
import os
import struct

import torch
import torch.nn as nn

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "testdata")


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    blobs = []
    off = 0
    for name in sorted(tensors):
        arr = tensors[name].detach().to(torch.float32).contiguous().reshape(-1)
        raw = struct.pack("<%df" % arr.numel(), *arr.tolist())
        header[name] = {
            "dtype": "F32",
            "shape": list(tensors[name].shape),
            "data_offsets": [off, off + len(raw)],
        }
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)  # align the data section to 8 bytes
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(path + ".tmp", path)
    print(f"wrote {os.path.relpath(path)} ({len(tensors)} tensors, {8 + len(h) + off} bytes)")


def f32_then_f64(t):
    """Round to float32 first so both sides start from identical values."""
    return t.to(torch.float32).to(torch.float64)


def randomize(module, gen, scale=0.5):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(f32_then_f64(torch.randn(p.shape, generator=gen, dtype=torch.float64) * scale))


def grads_of(module, loss_fn, inputs):
    for x in inputs:
        x.requires_grad_(True)
    out = loss_fn()
    loss = (out ** 2).mean()
    params = list(module.named_parameters())
    gs = torch.autograd.grad(loss, [p for _, p in params] + inputs)
    named = {f"grad.{n}": g for (n, _), g in zip(params, gs)}
    return out, loss, named, gs[len(params):]


def meta(extra=None):
    m = {"generator": "tasks/gen_fixtures.py", "torch": torch.__version__, "dtype": "float64"}
    m.update(extra or {})
    return m


# ---------------------------------------------------------------- MLP

def gen_mlp():
    gen = torch.Generator().manual_seed(1234)
    model = nn.Sequential(
        nn.Linear(3, 8), nn.GELU(), nn.Linear(8, 8), nn.SiLU(), nn.Linear(8, 2)
    ).double()
    randomize(model, gen)
    x = f32_then_f64(torch.randn(5, 3, generator=gen, dtype=torch.float64))
    out, loss, named, (gx,) = grads_of(model, lambda: model(x), [x])
    t = {f"param.{n}": p for n, p in model.named_parameters()}
    t.update(named)
    t.update({"input": x, "output": out, "loss": loss.reshape(1), "grad_input": gx})
    write_safetensors(os.path.join(OUT, "torch_mlp.safetensors"), t, meta({"loss": "(out**2).mean()"}))


# ---------------------------------------------------------------- DiT pieces (facebookresearch/DiT)

def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        hd = c // self.heads
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = (q @ k.transpose(-2, -1)) * hd ** -0.5
        att = att.softmax(dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class DiTBlock(nn.Module):
    def __init__(self, hidden, heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, heads)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x, c):
        sh_msa, sc_msa, g_msa, sh_mlp, sc_mlp, g_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + g_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), sh_msa, sc_msa))
        x = x + g_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), sh_mlp, sc_mlp))
        return x


def gen_attn():
    gen = torch.Generator().manual_seed(99)
    blk = DiTBlock(8, 2).double()
    randomize(blk, gen)
    x = f32_then_f64(torch.randn(2, 5, 8, generator=gen, dtype=torch.float64))
    c = f32_then_f64(torch.randn(2, 8, generator=gen, dtype=torch.float64))
    out, loss, named, (gx, gc) = grads_of(blk, lambda: blk(x, c), [x, c])
    t = {f"param.{n}": p for n, p in blk.named_parameters()}
    t.update(named)
    t.update({"x": x, "c": c, "output": out, "loss": loss.reshape(1), "grad_x": gx, "grad_c": gc})
    write_safetensors(os.path.join(OUT, "torch_attn.safetensors"), t, meta({"heads": 2}))


def timestep_embedding(t, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half)
    args = t[:, None].double() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_2d(embed_dim, grid_size):
    import numpy as np

    gh = np.arange(grid_size, dtype=np.float64)
    gw = np.arange(grid_size, dtype=np.float64)
    grid = np.stack(np.meshgrid(gw, gh), axis=0).reshape(2, 1, grid_size, grid_size)

    def one(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([one(embed_dim // 2, grid[0]), one(embed_dim // 2, grid[1])], axis=1)


class TinyDiT(nn.Module):
    def __init__(self, input_size=4, patch=2, in_ch=1, hidden=16, depth=2, heads=2, classes=3):
        super().__init__()
        self.p, self.c = patch, in_ch
        self.x_embedder = nn.Module()
        self.x_embedder.proj = nn.Conv2d(in_ch, hidden, patch, stride=patch)
        self.t_embedder = nn.Module()
        self.t_embedder.mlp = nn.Sequential(nn.Linear(256, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.y_embedder = nn.Module()
        self.y_embedder.embedding_table = nn.Embedding(classes + 1, hidden)
        n = (input_size // patch) ** 2
        self.pos_embed = nn.Parameter(
            f32_then_f64(torch.from_numpy(sincos_2d(hidden, input_size // patch))).reshape(1, n, hidden),
            requires_grad=False,
        )
        self.blocks = nn.ModuleList([DiTBlock(hidden, heads) for _ in range(depth)])
        self.final_layer = nn.Module()
        self.final_layer.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.final_layer.linear = nn.Linear(hidden, patch * patch * in_ch)
        self.final_layer.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x, t, y):
        h = self.x_embedder.proj(x).flatten(2).transpose(1, 2) + self.pos_embed
        c = self.t_embedder.mlp(timestep_embedding(t, 256)) + self.y_embedder.embedding_table(y)
        for blk in self.blocks:
            h = blk(h, c)
        fl = self.final_layer
        shift, scale = fl.adaLN_modulation(c).chunk(2, dim=1)
        h = fl.linear(modulate(fl.norm_final(h), shift, scale))
        n, tk, _ = h.shape
        g = int(tk ** 0.5)
        h = h.reshape(n, g, g, self.p, self.p, self.c)
        h = torch.einsum("nhwpqc->nchpwq", h)
        return h.reshape(n, self.c, g * self.p, g * self.p)


def gen_dit():
    gen = torch.Generator().manual_seed(7)
    net = TinyDiT().double()
    with torch.no_grad():
        for n, p in net.named_parameters():
            if n == "pos_embed":
                continue
            p.copy_(f32_then_f64(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.3))
    x = f32_then_f64(torch.randn(2, 1, 4, 4, generator=gen, dtype=torch.float64))
    t = torch.tensor([0.25, 0.8], dtype=torch.float64)
    y = torch.tensor([1, 3])  # 3 = the null class
    params = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    x.requires_grad_(True)
    out = net(x, t, y)
    loss = (out ** 2).mean()
    gs = torch.autograd.grad(loss, [p for _, p in params] + [x])
    tens = {f"param.{n}": p for n, p in net.named_parameters()}
    tens.update({f"grad.{n}": g for (n, _), g in zip(params, gs)})
    tens.update({"x": x, "t": t, "y": y.double(), "output": out, "loss": loss.reshape(1),
                 "grad_x": gs[-1]})
    write_safetensors(os.path.join(OUT, "torch_dit.safetensors"), tens, meta())


# ---------------------------------------------------------------- optimizers

def gen_optim():
    gen = torch.Generator().manual_seed(5)
    p0 = f32_then_f64(torch.randn(6, generator=gen, dtype=torch.float64))
    grads = [f32_then_f64(torch.randn(6, generator=gen, dtype=torch.float64)) for _ in range(8)]
    t = {"p0": p0}
    for i, g in enumerate(grads):
        t[f"grad.{i}"] = g
    configs = {
        "sgd": lambda p: torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01),
        "sgd_nesterov": lambda p: torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True),
        "adam": lambda p: torch.optim.Adam([p], lr=0.01, weight_decay=0.1),
        "adamw": lambda p: torch.optim.AdamW([p], lr=0.01, weight_decay=0.1),
        "radam": lambda p: torch.optim.RAdam([p], lr=0.01, weight_decay=0.05),
    }
    for name, make in configs.items():
        p = nn.Parameter(p0.clone())
        opt = make(p)
        for i, g in enumerate(grads):
            p.grad = g.clone()
            opt.step()
            t[f"{name}.{i}"] = p.detach().clone()
    write_safetensors(os.path.join(OUT, "torch_optim.safetensors"), t, meta({
        "sgd": "lr=0.1 momentum=0.9 weight_decay=0.01",
        "sgd_nesterov": "lr=0.1 momentum=0.9 nesterov=True",
        "adam": "lr=0.01 weight_decay=0.1",
        "adamw": "lr=0.01 weight_decay=0.1",
        "radam": "lr=0.01 weight_decay=0.05",
    }))


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch.set_default_dtype(torch.float64)
    gen_mlp()
    gen_attn()
    gen_dit()
    gen_optim()
