#!/usr/bin/python3
"""Equivalence fixtures: tests/testdata/torch_equiv_{dit,mlp,adaln}.safetensors.

    /usr/bin/python3 tasks/torch/fixtures.py        (deno task fixtures runs it too)

Each file holds one small network of tasks/torch/models.py (the PyTorch side of flowgpu's
nn.DiT, nn.VelocityMLP, nn.AdaLNMLP) with every parameter drawn at random (no zero init),
rounded to float32, and references computed in float64 with the model in eval mode:

  param.<key>         the state dict (PyTorch names, buffers included)
  x, t, y, out        a forward pass
  repa_out            net(x, 1 - t, y): the same weights read as a REPA/StableVM network
                      (t = 0 data, v = eps - x); flowgpu's v(x, t) after the
                      time-convention rewrite must equal -repa_out
  x1, x0, t1, y1      a train:cfm batch; loss = mean((v(x_t, t) - (x1 - x0))^2)
  grad.<name>         d loss / d param
  step.<name>         the parameters after one torch.optim.AdamW step (metadata lr, wd)
  z, zy, euler, heun  samples from noise z with labels zy: Euler (8 steps) and Heun (4 steps)
                      from t = 0 to 1 (flowgpu's samplers)
"""
import os
import sys

import torch

sys.dont_write_bytecode = True  # keep __pycache__ out of the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flowgpu_io import save_safetensors  # noqa: E402
from models import DiT, AdaLNMLP, VelocityMLP  # noqa: E402
from objectives import cfm_path, integrate  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "testdata")
LR, WD = 1e-3, 0.01


def f32(t):
    return t.to(torch.float32).to(torch.float64)


def make(name, net, x_shape, num_classes, seed, scale):
    g = torch.Generator().manual_seed(seed)
    net = net.double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(f32(torch.randn(p.shape, generator=g, dtype=torch.float64) * scale))
    rnd = lambda *s: f32(torch.randn(*s, generator=g, dtype=torch.float64))  # noqa: E731
    labels = lambda n: torch.randint(0, num_classes + 1, (n,), generator=g)  # noqa: E731 (num_classes = null)
    out = {f"param.{k}": v.clone() for k, v in net.state_dict().items()}

    x, t, y = rnd(3, *x_shape), f32(torch.rand(3, generator=g, dtype=torch.float64)), labels(3)
    with torch.no_grad():
        out.update(x=x, t=t, y=y.double(), out=net(x, t, y), repa_out=net(x, 1 - t, y))

    x1, x0 = rnd(4, *x_shape), rnd(4, *x_shape)
    t1, y1 = f32(torch.rand(4, generator=g, dtype=torch.float64)), labels(4)
    xt, target = cfm_path(x0, x1, t1)
    loss = ((net(xt, t1, y1) - target) ** 2).mean()
    loss.backward()
    out.update(x1=x1, x0=x0, t1=t1, y1=y1.double(), loss=loss.detach().reshape(1))
    names = [n for n, _ in net.named_parameters()]
    out.update({f"grad.{n}": p.grad.clone() for n, p in net.named_parameters()})
    opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=WD)
    opt.step()
    out.update({f"step.{n}": p.detach().clone() for n, p in net.named_parameters()})
    with torch.no_grad():  # sample with the stepped weights
        z, zy = rnd(3, *x_shape), labels(3)
        out.update(z=z, zy=zy.double(),
                   euler=integrate(net, z, "euler", 8, cond=zy),
                   heun=integrate(net, z, "heun", 4, cond=zy))
    meta = {"generator": "tasks/torch/fixtures.py", "torch": torch.__version__, "reference_dtype": "float64",
            "adamw": f"lr={LR} weight_decay={WD} betas=(0.9,0.999) eps=1e-8", "params": ",".join(names)}
    path = os.path.join(OUT, f"torch_equiv_{name}.safetensors")
    save_safetensors(path, out, meta)
    print(f"wrote {os.path.relpath(path)} ({len(out)} tensors, {os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    make("dit", DiT(input_size=8, patch_size=2, in_channels=2, hidden_size=16, depth=2, num_heads=2,
                    num_classes=3, class_dropout_prob=0.1), (2, 8, 8), 3, 11, 0.3)
    make("mlp", VelocityMLP(2, hidden=32, depth=3, num_classes=3, class_dropout_prob=0.1), (2,), 3, 12, 0.4)
    make("adaln", AdaLNMLP(2, hidden=16, blocks=2, time_embed_dim=8, num_classes=3, class_dropout_prob=0.1),
         (2,), 3, 13, 0.4)
