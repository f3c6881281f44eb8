#!/usr/bin/python3
"""Fixture for flowgpu's fused self-attention: tests/testdata/torch_attention_op.safetensors.

    /usr/bin/python3 tasks/torch/attention_fixture.py

For each case ``<b>x<n>x<h>x<d>`` (batch, tokens, heads, head width) it stores, in float64 from
inputs rounded to float32, timm's attention between the projections (the ``Attention`` of
tasks/torch/models.py without ``qkv`` and ``proj``):

  <case>.qkv    [b, n, 3*h*d]   the packed projection ([b, n, 3, h, d])
  <case>.w      [b, n, h*d]     a cotangent; the loss is sum(out * w)
  <case>.out    [b, n, h*d]     softmax(q k^T / sqrt(d)) v, heads concatenated per token
  <case>.grad   [b, n, 3*h*d]   d loss / d qkv

Token counts and head widths include ones that are not multiples of a workgroup, of the
kernels' rows per invocation, or of 4 (the vec4 path), and DiT-tiny's 49 x 32.
"""
import os
import sys

import torch

sys.dont_write_bytecode = True  # keep __pycache__ out of the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flowgpu_io import save_safetensors  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "testdata")
CASES = [(2, 5, 2, 4), (1, 49, 1, 32), (2, 13, 3, 6), (3, 9, 1, 3), (1, 1, 2, 8), (1, 37, 2, 16)]


def f32(t):
    return t.to(torch.float32).to(torch.float64)


def attention(qkv, heads):
    b, n, w = qkv.shape
    d = w // (3 * heads)
    q, k, v = qkv.reshape(b, n, 3, heads, d).permute(2, 0, 3, 1, 4)
    o = ((q * d ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
    return o.transpose(1, 2).reshape(b, n, heads * d)


def main():
    g = torch.Generator().manual_seed(0)
    out = {}
    for b, n, h, d in CASES:
        name = f"{b}x{n}x{h}x{d}"
        # Scaled up so the softmax is far from uniform (scores of a few units).
        qkv = f32(torch.randn(b, n, 3 * h * d, generator=g, dtype=torch.float64) * 1.5).requires_grad_()
        w = f32(torch.randn(b, n, h * d, generator=g, dtype=torch.float64))
        o = attention(qkv, h)
        (o * w).sum().backward()
        out.update({f"{name}.qkv": qkv.detach(), f"{name}.w": w, f"{name}.out": o.detach(),
                    f"{name}.grad": qkv.grad})
    meta = {"generator": "tasks/torch/attention_fixture.py", "torch": torch.__version__,
            "reference_dtype": "float64", "cases": ",".join(f"{b}x{n}x{h}x{d}" for b, n, h, d in CASES)}
    path = os.path.join(OUT, "torch_attention_op.safetensors")
    save_safetensors(path, out, meta)
    print(f"wrote {os.path.relpath(path)} ({len(out)} tensors, {os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
