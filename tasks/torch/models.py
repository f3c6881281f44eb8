"""flowgpu's networks in PyTorch, with flowgpu's (= the reference code's) parameter names.

* ``DiT`` (SiT shares the network): facebookresearch/DiT and the REPA / StableVM ``SiT``
  names -- ``x_embedder.proj``, ``t_embedder.mlp.0|2``, ``y_embedder.embedding_table``,
  ``pos_embed`` (a buffer), ``blocks.N.{attn.qkv, attn.proj, mlp.fc1, mlp.fc2,
  adaLN_modulation.1}``, ``final_layer.{linear, adaLN_modulation.1}`` -- and layouts
  (Linear weight [out, in], Conv2d weight [out, in, p, p]). Like flowgpu's ``nn.DiT`` the
  label table has a null row only when the label dropout is > 0 (REPA/SV always have one).
* ``VelocityMLP``: torchcfm's ``MLP`` names (``net.0``, ``net.2``, ...) plus an optional
  ``y_embedder`` added after the first layer (flowgpu's ``nn.VelocityMLP``).
* ``AdaLNMLP``: StableVM's toy ``ScoreNet`` (gmm_exp.py): ``input_layer``,
  ``blocks.N.0.{norm, fc}``, ``blocks.N.1``, ``output_layer``, plus an optional
  ``y_embedder`` (flowgpu's ``nn.AdaLNMLP``).

Time convention: these networks are fed flowgpu's t (0 = noise, 1 = data) and predict
x1 - x0. A network trained by the REPA/SV code sees s = 1 - t and predicts eps - x, i.e.
v_ours(x, t) = -net(x, 1 - t); ``deno task convert --time-convention repa`` rewrites such
weights into ours (and back), see lib/nn/convert.ts.
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def timestep_embedding(t, dim, max_period=10000.0, scale=1.0, order="cos_sin"):
    """flowgpu's ``timestepEmbedding``: with half = dim // 2 and
    f_i = scale * exp(-ln(max_period) * i / half) (rounded to f32, as flowgpu stores them),
    [cos(t f), sin(t f)] (or [sin, cos]), plus a zero column when dim is odd."""
    half = dim // 2
    f = scale * torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half)
    f = f.to(torch.float32).to(device=t.device, dtype=t.dtype if t.is_floating_point() else torch.float32)
    args = t.reshape(-1, 1).to(f.dtype) * f[None]
    parts = [torch.cos(args), torch.sin(args)] if order == "cos_sin" else [torch.sin(args), torch.cos(args)]
    if dim % 2:
        parts.append(torch.zeros_like(args[:, :1]))
    return torch.cat(parts, dim=-1)


def get_2d_sincos_pos_embed(embed_dim, grid_size):
    """DiT/MAE fixed 2-D sin-cos table [grid_size**2, embed_dim] (column index first)."""
    gh = np.arange(grid_size, dtype=np.float64)
    gw = np.arange(grid_size, dtype=np.float64)
    grid = np.stack(np.meshgrid(gw, gh), axis=0).reshape(2, 1, grid_size, grid_size)

    def one(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([one(embed_dim // 2, grid[0]), one(embed_dim // 2, grid[1])], axis=1)


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class LabelEmbedder(nn.Module):
    """Labels -> vectors with per-sample label dropout (null class = num_classes)."""

    def __init__(self, num_classes, hidden, dropout_prob=0.1):
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + (1 if dropout_prob > 0 else 0), hidden)

    def null_labels(self, n, device):
        if self.dropout_prob == 0:
            raise ValueError("class-conditional model without a null class: pass labels y")
        return torch.full((n,), self.num_classes, dtype=torch.long, device=device)

    def forward(self, labels, force_drop=None):
        labels = labels.long()
        if force_drop is not None:
            labels = torch.where(force_drop == 1, torch.full_like(labels, self.num_classes), labels)
        elif self.training and self.dropout_prob > 0:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
            labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        return self.embedding_table(labels)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden, frequency_embedding_size=256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t):
        return self.mlp(timestep_embedding(t, self.frequency_embedding_size))


class PatchEmbed(nn.Module):
    """timm's PatchEmbed (only ``proj``): images -> tokens [N, T, hidden]."""

    def __init__(self, patch, in_ch, hidden):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, hidden, patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """timm's Attention (qkv, proj) without qk-norm."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        hd = c // self.heads
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        if hasattr(F, "scaled_dot_product_attention") and x.dtype != torch.float64:
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            o = ((q * hd ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        return self.proj(o.transpose(1, 2).reshape(b, n, c))


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
        sh1, sc1, g1, sh2, sc2, g2 = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + g1.unsqueeze(1) * self.attn(modulate(self.norm1(x), sh1, sc1))
        return x + g2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), sh2, sc2))


class FinalLayer(nn.Module):
    def __init__(self, hidden, patch, out_ch):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch * patch * out_ch)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    """DiT/SiT as flowgpu's ``nn.DiT`` (learn_sigma = False: the output is a velocity)."""

    def __init__(self, input_size, patch_size=2, in_channels=4, hidden_size=384, depth=12,
                 num_heads=6, mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=1000):
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input_size {input_size} is not divisible by patch_size {patch_size}")
        self.patch_size, self.in_channels = patch_size, in_channels
        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob) if num_classes > 0 else None
        grid = input_size // patch_size
        pe = torch.from_numpy(get_2d_sincos_pos_embed(hidden_size, grid)).float().reshape(1, grid * grid, hidden_size)
        self.register_buffer("pos_embed", pe)
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, in_channels)
        self.initialize_weights()

    def initialize_weights(self):
        def basic(m):
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.apply(basic)
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for blk in self.blocks:
            nn.init.zeros_(blk.adaLN_modulation[-1].weight)
            nn.init.zeros_(blk.adaLN_modulation[-1].bias)
        fl = self.final_layer
        for p in (fl.adaLN_modulation[-1].weight, fl.adaLN_modulation[-1].bias, fl.linear.weight, fl.linear.bias):
            nn.init.zeros_(p)

    def unpatchify(self, x):
        p, c = self.patch_size, self.in_channels
        n, tk, _ = x.shape
        g = int(round(tk ** 0.5))
        x = torch.einsum("nhwpqc->nchpwq", x.reshape(n, g, g, p, p, c))
        return x.reshape(n, c, g * p, g * p)

    def forward(self, x, t, y=None, force_drop=None):
        h = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t)
        if self.y_embedder is not None:
            labels = y if y is not None else self.y_embedder.null_labels(x.shape[0], x.device)
            c = c + self.y_embedder(labels, force_drop)
        for blk in self.blocks:
            h = blk(h, c)
        return self.unpatchify(self.final_layer(h, c))


_ACTS = {"silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh, "selu": nn.SELU, "gelu": nn.GELU,
         "gelu_tanh": lambda: nn.GELU(approximate="tanh")}


class VelocityMLP(nn.Module):
    """[x, t] (or [x, emb(t)]) -> depth hidden layers -> velocity, as flowgpu's nn.VelocityMLP."""

    def __init__(self, dim, hidden=256, depth=3, activation="silu", num_classes=0,
                 class_dropout_prob=0.1, time_embed_dim=0):
        super().__init__()
        self.dim, self.time_embed_dim = dim, time_embed_dim
        layers = [nn.Linear(dim + (time_embed_dim or 1), hidden)]
        for _ in range(depth - 1):
            layers += [_ACTS[activation](), nn.Linear(hidden, hidden)]
        layers += [_ACTS[activation](), nn.Linear(hidden, dim)]
        self.net = nn.Sequential(*layers)
        self.y_embedder = LabelEmbedder(num_classes, hidden, class_dropout_prob) if num_classes else None

    def forward(self, x, t, y=None):
        tf = timestep_embedding(t, self.time_embed_dim) if self.time_embed_dim else t.reshape(-1, 1).to(x.dtype)
        h = self.net[0](torch.cat([x, tf], dim=1))
        if self.y_embedder is not None:
            labels = y if y is not None else self.y_embedder.null_labels(x.shape[0], x.device)
            h = h + self.y_embedder(labels)
        for layer in self.net[1:]:
            h = layer(h)
        return h


class AdaLNZero(nn.Module):
    """StableVM toy AdaLNZero: LayerNorm(hidden) * (1 + scale) + shift, (scale, shift) = fc(cond)."""

    def __init__(self, hidden, cond_dim):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc = nn.Linear(cond_dim, 2 * hidden)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x, cond):
        scale, shift = self.fc(cond).chunk(2, dim=-1)
        return self.norm(x) * (1 + scale) + shift


class AdaLNMLP(nn.Module):
    """StableVM's toy ScoreNet (+ optional label embedding), as flowgpu's nn.AdaLNMLP."""

    def __init__(self, dim, hidden=32, blocks=4, dropout=0.1, time_embed_dim=32, num_classes=0,
                 class_dropout_prob=0.1):
        super().__init__()
        self.dim, self.time_embed_dim = dim, time_embed_dim
        self.input_layer = nn.Linear(dim + time_embed_dim, hidden)
        self.blocks = nn.ModuleList([
            nn.Sequential(AdaLNZero(hidden, time_embed_dim), nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout))
            for _ in range(blocks)
        ])
        self.output_layer = nn.Linear(hidden, dim)
        self.y_embedder = LabelEmbedder(num_classes, time_embed_dim, class_dropout_prob) if num_classes else None

    def forward(self, x, t, y=None):
        e = timestep_embedding(t, self.time_embed_dim, max_period=1000.0, scale=2 * math.pi, order="sin_cos").to(x.dtype)
        cond = e
        if self.y_embedder is not None:
            labels = y if y is not None else self.y_embedder.null_labels(x.shape[0], x.device)
            cond = e + self.y_embedder(labels)
        h = self.input_layer(torch.cat([x, e], dim=1))
        for blk in self.blocks:
            h = blk[3](blk[2](blk[1](blk[0](h, cond))))
        return self.output_layer(h)


def dit_tiny_geometry(c):
    """train:cfm's dit-tiny rule (tasks/_train_loop.ts buildModel): patch 4 when the side
    is a multiple of 4 (else 2, else 1), 4 heads when the width is a multiple of 4 (else 1)."""
    h = c["dataShape"][1]
    patch = 4 if h % 4 == 0 else 2 if h % 2 == 0 else 1
    heads = 4 if c["hidden"] % 4 == 0 else 1
    return patch, heads


def build_model(c):
    """The network a flowgpu ``train:cfm`` config describes (as buildModel in
    tasks/_train_loop.ts); initialised from ``torch.manual_seed(seed + 1)``."""
    if c.get("task") != "train:cfm":
        raise ValueError(f'expected a train:cfm config (task "train:cfm") but found task {c.get("task")!r}')
    torch.manual_seed(int(c.get("seed", 0)) + 1)
    shape = c["dataShape"]
    if c["model"] == "velocity-mlp":
        if len(shape) != 1:
            raise ValueError(f"velocity-mlp needs flat samples but dataShape is {shape}")
        return VelocityMLP(shape[0], c["hidden"], c["depth"], num_classes=c.get("numClasses", 0),
                           class_dropout_prob=c.get("cfgDropout", 0))
    if c["model"] == "dit-tiny":
        if len(shape) != 3:
            raise ValueError(f"dit-tiny needs images [C, H, W] but dataShape is {shape}")
        patch, heads = dit_tiny_geometry(c)
        return DiT(input_size=shape[1], patch_size=patch, in_channels=shape[0], hidden_size=c["hidden"],
                   depth=c["depth"], num_heads=heads, num_classes=c.get("numClasses", 0),
                   class_dropout_prob=c.get("cfgDropout", 0))
    raise ValueError(f'unknown model {c["model"]!r} (expected velocity-mlp or dit-tiny)')
