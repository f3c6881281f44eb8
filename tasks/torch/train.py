#!/usr/bin/python3
"""Train a flowgpu ``train:cfm`` configuration with PyTorch DistributedDataParallel.

    torchrun --nproc_per_node 8 tasks/torch/train.py --config runs/train-cfm-X/config.json
    torchrun --nproc_per_node 2 tasks/torch/train.py --init-from runs/train-cfm-X --loss-type stablevm
    torchrun --nproc_per_node 2 tasks/torch/train.py --resume runs/train-cfm-torch-Y --max-train-steps 5000
    /usr/bin/python3 tasks/torch/train.py --config config.json          # one process, no torchrun

Debian's torchrun 1.13 spells the flag ``--nproc_per_node`` (torch >= 2.0 also accepts
``--nproc-per-node``) and, under Python 3.11, needs ``--redirects 1 --tee 1`` to get past
a bug in its default log settings (Std.NONE is skipped when iterating the IntFlag).

Backends: NCCL with one GPU per process when CUDA is available (``--device auto``), gloo
on CPU processes otherwise. The global batch ``batchSize`` is split over the processes.

What it reads: a flowgpu config.json (``--config``: the file, a run directory, or a
checkpoint whose metadata holds the config); optionally a flowgpu checkpoint to start from
(``--init-from``: weights and EMA) or to continue (``--resume``: also Adam's moments and the
step). Flags given on the command line override the config (kebab-case or snake_case).

What it writes (rank 0), in flowgpu's run layout so ``deno task sample --checkpoint <run>``
loads it: ``config.json`` (the config plus ``lossType`` and a ``trainer`` record),
``metrics.jsonl`` (``training/loss_flow``, ``training/grad_norm``, ``training/lr``),
``checkpoints/step-N.safetensors`` and ``last.safetensors`` (``model.*`` raw weights and
buffers, ``ema.*`` EMA weights, ``optim.exp_avg.<i>``/``optim.exp_avg_sq.<i>``, metadata
step/config/extra/rng), and ``torch/last.pt`` (REPA's layout: model, ema, opt, args, steps).

Objectives in flowgpu's convention (t = 0 noise, t = 1 data): ``--loss-type cfm`` is
train:cfm's loss (I-CFM or Lipman's path, uniform or logit-normal t); ``--loss-type
stablevm`` is SV's StableVMLoss converted to this convention (see objectives.py).
Optimizer as train:cfm: Adam(lr), global grad-norm clipping, EMA with decay
min(emaDecay, (1 + n)/(10 + n)).
"""
import argparse
import datetime
import json
import os
import sys
import time

import torch
import torch.distributed as dist

sys.dont_write_bytecode = True  # keep __pycache__ out of the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from data import DataSource  # noqa: E402
from flowgpu_io import CheckpointManager, append_metrics, atomic_write, load_checkpoint, resolve_checkpoint  # noqa: E402
from models import build_model  # noqa: E402
from objectives import MemoryBank, cfm_loss, stablevm_loss  # noqa: E402

OVERRIDES = {  # flag -> (config key, type)
    "max-train-steps": ("maxTrainSteps", int), "batch-size": ("batchSize", int), "lr": ("lr", float),
    "seed": ("seed", int), "checkpoint-every": ("checkpointEvery", int), "log-every": ("logEvery", int),
    "ema-decay": ("emaDecay", float), "grad-clip": ("gradClip", float), "output-dir": ("outputDir", str),
    "exp-name": ("expName", str), "loss-type": ("lossType", str),
    "bank-capacity-per-class": ("bankCapacityPerClass", int),
}


class UsageError(Exception):
    pass


def parse_args(argv):
    p = argparse.ArgumentParser(prog="train.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="flowgpu config.json, run directory, or checkpoint holding a config")
    p.add_argument("--init-from", "--init_from", help="flowgpu checkpoint or run directory to start from")
    p.add_argument("--resume", help="flowgpu run directory or checkpoint to continue (weights, EMA, Adam, step)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--keep", type=int, default=3, help="numbered checkpoints to keep")
    p.add_argument("--no-pt", "--no_pt", action="store_true", help="do not write torch/last.pt")
    for flag, (key, typ) in OVERRIDES.items():
        p.add_argument(f"--{flag}", f"--{flag.replace('-', '_')}", dest=key, type=typ)
    return p.parse_args(argv)


def read_config(spec):
    if os.path.isdir(spec):
        spec = os.path.join(spec, "config.json")
    if spec.endswith(".safetensors"):
        cfg = load_checkpoint(spec)["config"]
        if cfg is None:
            raise UsageError(f"--config {spec}: the checkpoint holds no config")
        return cfg
    try:
        with open(spec, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UsageError(f"--config {spec}: no such file")


def resolve_config(a):
    start = None
    if a.resume or a.init_from:
        src = a.resume or a.init_from
        try:
            start = load_checkpoint(resolve_checkpoint(src))
        except (OSError, ValueError) as e:
            raise UsageError(f"{'--resume' if a.resume else '--init-from'} {src}: {e}")
    if a.config:
        cfg = read_config(a.config)
    elif start is not None and start["config"] is not None:
        cfg = dict(start["config"])
        if not a.resume:
            cfg["expName"] = None  # a new run next to the one it starts from, unless --exp-name
    else:
        raise UsageError("pass --config (a flowgpu config.json), --init-from or --resume")
    if cfg.get("task") != "train:cfm":
        raise UsageError(f'the config is for task {cfg.get("task")!r}; this trainer runs "train:cfm" configs')
    for key, _ in OVERRIDES.values():
        v = getattr(a, key)
        if v is not None:
            cfg[key] = v
    cfg.setdefault("lossType", "cfm")
    if cfg["lossType"] not in ("cfm", "stablevm"):
        raise UsageError(f'--loss-type must be cfm or stablevm but is {cfg["lossType"]!r}')
    if cfg.get("ot", "none") != "none":
        raise UsageError(f'--ot {cfg["ot"]}: minibatch OT couplings are not implemented here; '
                         'train OT-CFM with deno task train:cfm')
    return cfg, start


def ema_decay(d, n):
    return min(d, (1 + n) / (10 + n))


def adam_state_to_flowgpu(opt, params):
    out = {}
    for i, p in enumerate(params):
        st = opt.state.get(p)
        if st:
            out[f"exp_avg.{i}"] = st["exp_avg"]
            out[f"exp_avg_sq.{i}"] = st["exp_avg_sq"]
    return out


def adam_state_from_flowgpu(opt, params, tensors, step, device):
    sd = opt.state_dict()
    for i, _ in enumerate(params):
        if f"exp_avg.{i}" not in tensors:
            return
        sd["state"][i] = {"step": torch.tensor(float(step)), "exp_avg": tensors[f"exp_avg.{i}"].to(device),
                          "exp_avg_sq": tensors[f"exp_avg_sq.{i}"].to(device)}
    opt.load_state_dict(sd)


def main(argv):
    a = parse_args(argv)
    cfg, start = resolve_config(a)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available())
    device = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    backend = "nccl" if use_cuda else "gloo"
    if cfg["batchSize"] % world:
        raise UsageError(f'batchSize {cfg["batchSize"]} is not divisible by the {world} processes')
    per = cfg["batchSize"] // world
    if world > 1:
        dist.init_process_group(backend)

    model = build_model(cfg).to(device)  # identical initialisation on every rank (seed + 1)
    step = 0
    ema_updates = 0
    if start is not None:
        try:
            model.load_state_dict({k: v.to(device) for k, v in start["model"].items()})
        except RuntimeError as e:
            raise UsageError(f"the checkpoint's weights do not fit the config's {cfg['model']}: {e}")
    params = [p for p in model.parameters()]
    names = [n for n, _ in model.named_parameters()]
    ema = {n: p.detach().clone() for n, p in model.named_parameters()}
    if start is not None and start["ema"]:
        ema = {n: start["ema"][n].to(device).clone() for n in names}
    opt = torch.optim.Adam(params, lr=cfg["lr"])
    if a.resume:
        extra = start["extra"] or {}
        step = start["step"]
        ema_updates = int(extra.get("emaUpdates", step))
        adam_state_from_flowgpu(opt, params, start["optim"], int(extra.get("optimizerStep", step)), device)
    if step >= cfg["maxTrainSteps"]:
        raise UsageError(f'the run is at step {step}; pass --max-train-steps > {step} to continue')

    # Output: the resumed run directory, or a new one.
    if a.resume and os.path.isdir(a.resume):
        run_dir = a.resume.rstrip("/")
    elif a.resume:
        run_dir = os.path.dirname(os.path.dirname(os.path.abspath(a.resume)))
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = os.path.join(cfg.get("outputDir") or "runs", cfg.get("expName") or f"train-cfm-torch-{stamp}")
        if rank == 0 and os.path.exists(os.path.join(run_dir, "config.json")):
            raise UsageError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --exp-name")
    cfg["resume"] = a.resume
    cfg["trainer"] = {"name": "torch-ddp", "worldSize": world, "backend": backend,
                      "device": device.type, "torch": torch.__version__}
    if rank == 0:
        atomic_write(os.path.join(run_dir, "config.json"), (json.dumps(cfg, indent=2) + "\n").encode())

    raw = model
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(raw, device_ids=[local] if use_cuda else None)
    raw.train()
    stable = cfg["lossType"] == "stablevm"
    if stable and raw.y_embedder is not None:
        raw.y_embedder.eval()  # StableVM draws the null labels itself; do not drop twice
    torch.manual_seed(int(cfg["seed"]) * 1000003 + 100003 * (rank + 1) + step)
    data = DataSource(cfg, rank)
    shape = cfg["dataShape"]
    C = cfg.get("numClasses", 0)
    bank = None
    if stable:
        bank = MemoryBank(C, int(torch.tensor(shape).prod()), cfg.get("bankCapacityPerClass", 256), device=device)
        while not bank.ready():
            x, y = data.batch(per)
            bank.add(x, y)

    ckpts = CheckpointManager(os.path.join(run_dir, "checkpoints"), keep=a.keep)
    metrics = os.path.join(run_dir, "metrics.jsonl")

    def save():
        ck = dict(model={k: v for k, v in raw.state_dict().items()}, ema=ema,
                  optim=adam_state_to_flowgpu(opt, params), config=cfg,
                  rng={"seed": int(cfg["seed"]), "counter": step * 2 ** 24},
                  extra={"optimizerStep": step, "emaUpdates": ema_updates, "trainer": "torch-ddp",
                         "worldSize": world})
        path = ckpts.save(step, **ck)
        if not a.no_pt:
            pt = os.path.join(run_dir, "torch", "last.pt")
            os.makedirs(os.path.dirname(pt), exist_ok=True)
            torch.save({"model": raw.state_dict(), "ema": ema, "opt": opt.state_dict(), "args": cfg,
                        "steps": step}, pt + ".tmp")
            os.replace(pt + ".tmp", pt)
        return path

    acc_loss = torch.zeros(2, device=device)
    acc_n = 0
    t0, s0 = time.time(), step
    path = None
    while step < cfg["maxTrainSteps"]:
        x1, y = data.batch(per)
        if stable:
            bank.add(x1, y)
            loss = stablevm_loss(model, bank, per, shape)
        else:
            x1 = x1.to(device)
            loss = cfm_loss(model, x1, y.to(device) if (C and y is not None) else None, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip = cfg.get("gradClip", 0) or 0
        gn = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
        opt.step()
        ema_updates += 1
        d = ema_decay(cfg.get("emaDecay", 0.999), ema_updates)
        with torch.no_grad():
            for n, p in zip(names, params):
                ema[n].mul_(d).add_(p.detach(), alpha=1 - d)
        step += 1
        acc_loss += torch.stack([loss.detach(), gn.detach().to(loss.dtype)])
        acc_n += 1
        if step % cfg.get("logEvery", 100) == 0 or step == cfg["maxTrainSteps"]:
            if world > 1:
                dist.all_reduce(acc_loss)
            l, g = (acc_loss / (acc_n * world)).tolist()
            acc_loss.zero_()
            acc_n = 0
            if rank == 0:
                append_metrics(metrics, step, {"training/loss_flow": l, "training/grad_norm": g,
                                               "training/lr": cfg["lr"]})
                rate = (step - s0) / max(1e-9, time.time() - t0)
                print(f"step {step}/{cfg['maxTrainSteps']} loss {l:.4f} grad_norm {g:.3f} "
                      f"{rate:.2f} it/s ({world} x {per} per step, {backend})", flush=True)
        if rank == 0 and (step % cfg.get("checkpointEvery", 1000) == 0 or step == cfg["maxTrainSteps"]):
            path = save()
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        print(f"run: {run_dir}\ncheckpoint: {path}", flush=True)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UsageError as e:
        print(f"train.py: {e}", file=sys.stderr)
        sys.exit(2)
