#!/usr/bin/python3
"""Generate the PyTorch golden fixtures in tests/testdata/torch_*.safetensors.

Run by hand (Debian's python3-torch; use /usr/bin/python3 if a pyenv python shadows it):

    /usr/bin/python3 tasks/gen_fixtures.py [mlp|attn|dit|optim|train|muon|repa ...]

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
  torch_train.safetensors The training loop's helpers: EMA (torch.optim.swa_utils.AveragedModel
                          with the FB/SV warm-up decay min(d, (1 + n)/(10 + n)) and with a fixed
                          decay) over 8 updates; torch.nn.utils.clip_grad_norm_ on a clipped
                          and an unclipped gradient set; the learning rate of every schedule
                          lib/optim offers (constant, linear warm-up, cosine with and without
                          warm-up and floor, inverse square root) from torch.optim.lr_scheduler
                          at steps 0..N.
  torch_muon.safetensors  5 steps of Muon (Keller Jordan's reference: momentum lerp, Nesterov,
                          quintic Newton-Schulz (3.4445, -4.7750, 2.0315) x5 on the smaller Gram
                          matrix, sqrt(max(1, rows/cols)) scaling, decoupled decay) on a tall, a
                          wide and a conv (flattened) matrix, with torch.optim.AdamW on a bias and
                          an embedding table left out of Muon; two settings (nesterov + decay,
                          plain momentum without decay). Computed in float64.
  torch_repa.safetensors  The REPA projection loss as StableVelocity's SILoss computes it
                          (F.normalize, -cosine averaged over patches, per-sample weights of the
                          five VA-REPA schedules or uniform, sum(w*l)/sum(w), 0 when sum(w) <= 1e-8)
                          and its gradient w.r.t. the projected features, for z, z~ [6, 3, 5];
                          times are stored in flowgpu's convention (t = 1 data), SV's is 1 - t.
"""
import json
import math
import os
import struct
import sys

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


# ---------------------------------------------------------------- training-loop helpers

def gen_train():
    gen = torch.Generator().manual_seed(6)
    rnd = lambda *s: f32_then_f64(torch.randn(*s, generator=gen, dtype=torch.float64))  # noqa: E731
    t = {}
    # EMA over a two-tensor module; snapshots p_1..p_8 after the initial p_0.
    net = nn.Linear(4, 3)
    with torch.no_grad():
        net.weight.copy_(rnd(3, 4))
        net.bias.copy_(rnd(3))
    t["ema.p0.weight"], t["ema.p0.bias"] = net.weight.detach().clone(), net.bias.detach().clone()
    snaps = [(rnd(3, 4), rnd(3)) for _ in range(8)]
    for i, (w, b) in enumerate(snaps):
        t[f"ema.p{i + 1}.weight"], t[f"ema.p{i + 1}.bias"] = w, b
    for name, decay, warm in [("warm", 0.4, True), ("fixed", 0.9, False)]:
        # avg_fn gets n = updates so far including this one (the first call only copies p_0).
        fn = (lambda d, w_: lambda avg, p, n: (min(d, (1 + n.item()) / (10 + n.item())) if w_ else d)
              * avg + (1 - (min(d, (1 + n.item()) / (10 + n.item())) if w_ else d)) * p)(decay, warm)
        with torch.no_grad():
            net.weight.copy_(t["ema.p0.weight"])
            net.bias.copy_(t["ema.p0.bias"])
        avg = torch.optim.swa_utils.AveragedModel(net, avg_fn=fn)
        avg.update_parameters(net)  # n_averaged 0: copies p_0 (flowgpu's EMA constructor)
        for i, (w, b) in enumerate(snaps):
            with torch.no_grad():
                net.weight.copy_(w)
                net.bias.copy_(b)
            avg.update_parameters(net)
            t[f"ema.{name}.{i + 1}.weight"] = avg.module.weight.detach().clone()
            t[f"ema.{name}.{i + 1}.bias"] = avg.module.bias.detach().clone()
    # Gradient clipping: a set whose global norm exceeds max_norm, and one below it.
    for name, scale, max_norm in [("clipped", 3.0, 1.0), ("unclipped", 0.1, 5.0)]:
        ps = [nn.Parameter(torch.zeros(5, 2)), nn.Parameter(torch.zeros(7))]
        for i, p in enumerate(ps):
            p.grad = rnd(*p.shape) * scale
            t[f"clip.{name}.g{i}"] = p.grad.clone()
        norm = torch.nn.utils.clip_grad_norm_(ps, max_norm)
        t[f"clip.{name}.norm"] = norm.reshape(1)
        t[f"clip.{name}.max_norm"] = torch.tensor([max_norm])
        for i, p in enumerate(ps):
            t[f"clip.{name}.out{i}"] = p.grad.clone()
    # Learning-rate schedules: torch's schedulers driving SGD, lr read before each step.
    base, steps, warm, total, floor = 0.1, 40, 5, 30, 0.01
    S = torch.optim.lr_scheduler
    scheds = {
        "constant": lambda o: S.LambdaLR(o, lambda s: 1.0),
        "warmup": lambda o: S.LinearLR(o, start_factor=1 / warm, end_factor=1.0, total_iters=warm - 1),
        "cosine": lambda o: S.CosineAnnealingLR(o, T_max=total),
        "cosine_floor": lambda o: S.CosineAnnealingLR(o, T_max=total, eta_min=floor),
        "cosine_warmup": lambda o: S.SequentialLR(o, [
            S.LinearLR(o, start_factor=1 / warm, end_factor=1.0, total_iters=warm - 1),
            S.CosineAnnealingLR(o, T_max=total - warm, eta_min=floor)], milestones=[warm]),
        # Boffi's flow-map "sqrt" schedule (py/common/state_utils.py), decay start 8.
        "inverse_sqrt": lambda o: S.LambdaLR(o, lambda s: 1 / math.sqrt(max(s / 8, 1))),
    }
    for name, make in scheds.items():
        p = nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=base)
        sch = make(opt)
        # CosineAnnealingLR is periodic past T_max; flowgpu clamps: compare up to `total` there.
        n = total + 1 if name.startswith("cosine") else steps
        lrs = []
        for _ in range(n):
            lrs.append(opt.param_groups[0]["lr"])
            p.grad = torch.zeros(1)
            opt.step()
            sch.step()
        t[f"lr.{name}"] = torch.tensor(lrs)
    write_safetensors(os.path.join(OUT, "torch_train.safetensors"), t, meta({
        "ema": "warm: decay 0.4 with warm-up min(d, (1+n)/(10+n)); fixed: decay 0.9",
        "clip": "clip_grad_norm_(max_norm) with norm_type 2",
        "lr": f"base {base}; warmup {warm}; cosine total {total}, eta_min {floor}; inverse_sqrt start 8",
    }))


# ---------------------------------------------------------------- Muon

def zeropower_via_newtonschulz5(G, steps):
    """Keller Jordan's Muon orthogonalisation (github.com/KellerJordan/Muon), in float64."""
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G.clone()
    if G.size(-2) > G.size(-1):
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    if G.size(-2) > G.size(-1):
        X = X.mT
    return X


def muon_update(grad, momentum, beta, nesterov, ns_steps=5):
    momentum.lerp_(grad, 1 - beta)
    update = grad.lerp(momentum, beta) if nesterov else momentum
    mat = update.reshape(len(update), -1)  # a conv weight [out, in, kh, kw] as [out, in*kh*kw]
    o = zeropower_via_newtonschulz5(mat, ns_steps)
    # flowgpu scales by the flattened matrix's shape (Keller's code reads grad.size(-2)/(-1),
    # the kernel's height/width for a conv weight).
    o = o * max(1, mat.size(-2) / mat.size(-1)) ** 0.5
    return o.reshape(grad.shape)


def gen_muon():
    gen = torch.Generator().manual_seed(7)
    rnd = lambda *s: f32_then_f64(torch.randn(*s, generator=gen, dtype=torch.float64))  # noqa: E731
    shapes = {"p0": (6, 4), "p1": (3, 5), "p2": (3, 2, 2, 2), "p3": (5,), "p4": (4, 3)}
    muon_mask = {"p0": True, "p1": True, "p2": True, "p3": False, "p4": False}
    t = {}
    for k, sh in shapes.items():
        t[f"init.{k}"] = rnd(*sh)
    steps = 5
    for i in range(steps):
        for k, sh in shapes.items():
            t[f"grad.{i}.{k}"] = rnd(*sh)
    configs = {
        "nesterov": dict(lr=0.02, momentum=0.95, nesterov=True, wd=0.1,
                         adam_lr=3e-3, adam_wd=0.05),
        "plain": dict(lr=0.05, momentum=0.9, nesterov=False, wd=0.0,
                      adam_lr=1e-2, adam_wd=0.0),
    }
    for name, cf in configs.items():
        ps = {k: nn.Parameter(t[f"init.{k}"].clone()) for k in shapes}
        bufs = {k: torch.zeros_like(ps[k]) for k in shapes if muon_mask[k]}
        adam = torch.optim.AdamW([ps[k] for k in shapes if not muon_mask[k]], lr=cf["adam_lr"],
                                 betas=(0.9, 0.95), eps=1e-10, weight_decay=cf["adam_wd"])
        for i in range(steps):
            with torch.no_grad():
                for k in shapes:
                    if not muon_mask[k]:
                        ps[k].grad = t[f"grad.{i}.{k}"].clone()
                        continue
                    u = muon_update(t[f"grad.{i}.{k}"].clone(), bufs[k], cf["momentum"],
                                    cf["nesterov"])
                    ps[k].mul_(1 - cf["lr"] * cf["wd"])
                    ps[k].add_(u, alpha=-cf["lr"])
            adam.step()
            for k in shapes:
                t[f"{name}.{i}.{k}"] = ps[k].detach().clone()
    write_safetensors(os.path.join(OUT, "torch_muon.safetensors"), t, meta({
        "muon_mask": "p0 p1 p2 Muon; p3 (bias) p4 (embedding) AdamW betas (0.9, 0.95) eps 1e-10",
        **{k: str(v) for k, v in configs.items()},
    }))


# ---------------------------------------------------------------- REPA projection loss

def sv_proj_weight(name, t, tau=0.7, k=20.0):
    """StableVelocity StableVM/loss.py's schedules; t in SV's convention (0 data, 1 noise)."""
    if name == "uniform":
        return torch.ones_like(t)
    if name == "hard":
        return (t < tau).double()
    if name == "hard_high":
        return (t >= tau).double()
    if name == "sigmoid":
        return torch.sigmoid(k * (tau - t))
    if name == "cosine":
        w = 0.5 * (1.0 + torch.cos(math.pi * t / tau))
        return torch.where(t < tau, w, torch.zeros_like(w))
    if name == "snr":  # linear path
        tc = t.clamp(min=1e-6, max=1.0 - 1e-6)
        tau_c = max(min(tau, 1.0 - 1e-6), 1e-6)
        snr_t = ((1.0 - tc) / tc) ** 2
        snr_lim = ((1.0 - tau_c) / tau_c) ** 2
        return snr_t / (snr_t + snr_lim)
    raise ValueError(name)


def sv_proj_loss(z, z_tilde, t_sv, name, tau, k):
    w = sv_proj_weight(name, t_sv, tau, k)
    ws = w.sum()
    if ws <= 1e-8:
        return (z_tilde * 0).sum()  # SV returns a zero tensor (no gradient)
    zn = torch.nn.functional.normalize(z, dim=-1)
    ztn = torch.nn.functional.normalize(z_tilde, dim=-1)
    per = -(zn * ztn).sum(dim=-1).mean(dim=-1)
    return (w * per).sum() / ws


def gen_repa():
    gen = torch.Generator().manual_seed(8)
    rnd = lambda *s: f32_then_f64(torch.randn(*s, generator=gen, dtype=torch.float64))  # noqa: E731
    B, N, D = 6, 3, 5
    t = {"z": rnd(B, N, D), "z_tilde": rnd(B, N, D)}
    # Our times (t = 1 data); the SV schedules see 1 - t. tau 0.6, k 7 (not the defaults, so a
    # default silently used instead of the option fails).
    t["t"] = torch.tensor([0.05, 0.2, 0.35, 0.5, 0.75, 0.95], dtype=torch.float64)
    t["t_late"] = torch.tensor([0.5, 0.6, 0.7, 0.8, 0.9, 0.95], dtype=torch.float64)
    tau, k = 0.6, 7.0
    cases = [(n, "t") for n in ["uniform", "hard", "hard_high", "sigmoid", "cosine", "snr"]]
    cases.append(("hard_high", "t_late"))  # every t_ref = 1 - t < tau: all weights 0
    for name, tk in cases:
        zt = t["z_tilde"].clone().requires_grad_(True)
        loss = sv_proj_loss(t["z"], zt, 1 - t[tk], name, tau, k)
        (g,) = torch.autograd.grad(loss, [zt], allow_unused=True)
        key = name if tk == "t" else f"{name}.{tk}"
        t[f"loss.{key}"] = loss.detach().reshape(1)
        t[f"grad.{key}"] = g if g is not None else torch.zeros_like(zt)
        t[f"weights.{key}"] = sv_proj_weight(name, 1 - t[tk], tau, k)
    write_safetensors(os.path.join(OUT, "torch_repa.safetensors"), t, meta({
        "tau": tau, "k": k, "convention": "t stored as flowgpu's (1 = data); SV's t is 1 - t",
    }))


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch.set_default_dtype(torch.float64)
    # Names on the command line pick generators (e.g. `gen_fixtures.py train`); default all.
    gens = {"mlp": gen_mlp, "attn": gen_attn, "dit": gen_dit, "optim": gen_optim, "train": gen_train,
            "muon": gen_muon, "repa": gen_repa}
    for name in sys.argv[1:] or list(gens):
        gens[name]()
