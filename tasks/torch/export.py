#!/usr/bin/python3
"""PyTorch ``.pt`` checkpoints <-> safetensors state dicts (no safetensors package needed).

    /usr/bin/python3 tasks/torch/export.py to-safetensors run.pt sd.safetensors [--which ema|model] [--dtype f32]
    /usr/bin/python3 tasks/torch/export.py to-pt sd.safetensors run.pt [--ema ema.safetensors]
    /usr/bin/python3 tasks/torch/export.py to-pt runs/x/checkpoints/last.safetensors run.pt

to-safetensors reads a REPA/StableVM/DiT training checkpoint (a dict with "ema" and/or
"model"; "args" and "steps" are carried into the metadata when present) or a bare state
dict, strips DDP's ``module.`` and torch.compile's ``_orig_mod.`` prefixes, and writes the
chosen weights (default: "ema" when present) as a plain state dict. Tensors keep their dtype
(F32, F16, BF16 are what ``deno task convert`` takes); ``--dtype f32`` casts everything.

to-pt writes REPA's checkpoint layout {"model", "ema", "args", "steps"} from a plain state
dict (its metadata config becomes "args") or from a flowgpu checkpoint (model./ema. sections).
"""
import argparse
import json
import os
import sys

import torch

sys.dont_write_bytecode = True  # keep __pycache__ out of the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flowgpu_io import FORMAT, load_checkpoint, load_safetensors, save_safetensors  # noqa: E402


def strip(sd):
    for p in ("module.", "_orig_mod."):
        if sd and all(k.startswith(p) for k in sd):
            return strip({k[len(p):]: v for k, v in sd.items()})
    return sd


def to_safetensors(a):
    ck = torch.load(a.input, map_location="cpu")
    meta = {"format": "pt", "source": os.path.basename(a.input)}
    if isinstance(ck, dict) and any(k in ck for k in ("ema", "model")):
        which = a.which or ("ema" if "ema" in ck else "model")
        if which not in ck:
            sys.exit(f"export.py: {a.input} has no {which!r} entry (it has {sorted(ck)})")
        sd = ck[which]
        args = ck.get("args")
        if isinstance(args, argparse.Namespace):
            args = vars(args)
        if isinstance(args, dict) and args.get("task"):  # a flowgpu config (tasks/torch/train.py)
            meta["config"] = json.dumps(args)
        elif args is not None:
            meta["args"] = json.dumps(args, default=str)
        if "steps" in ck:
            meta["step"] = str(int(ck["steps"]))
        meta["weights"] = which
    else:
        sd = ck
    sd = {k: v for k, v in strip(dict(sd)).items() if torch.is_tensor(v)}
    if a.dtype == "f32":
        sd = {k: v.float() for k, v in sd.items()}
    save_safetensors(a.output, sd, meta, keep_dtype=True)
    print(f"export.py: {len(sd)} tensors -> {a.output}")


def to_pt(a):
    tensors, meta = load_safetensors(a.input)
    if meta.get("format") == FORMAT:
        ck = load_checkpoint(a.input)
        out = {"model": ck["model"], "args": ck["config"], "steps": ck["step"]}
        if ck["ema"]:
            out["ema"] = {**{k: v for k, v in ck["model"].items() if k not in ck["ema"]}, **ck["ema"]}
    else:
        out = {"model": tensors, "args": json.loads(meta["config"]) if "config" in meta else None,
               "steps": int(meta.get("step", 0))}
        if a.ema:
            out["ema"] = load_safetensors(a.ema)[0]
    torch.save(out, a.output)
    print(f"export.py: {len(out['model'])} tensors{' + ema' if 'ema' in out else ''} -> {a.output}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="export.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("to-safetensors")
    s.add_argument("input")
    s.add_argument("output")
    s.add_argument("--which", choices=["ema", "model"])
    s.add_argument("--dtype", choices=["keep", "f32"], default="keep")
    t = sub.add_parser("to-pt")
    t.add_argument("input")
    t.add_argument("output")
    t.add_argument("--ema")
    a = p.parse_args()
    to_safetensors(a) if a.cmd == "to-safetensors" else to_pt(a)
