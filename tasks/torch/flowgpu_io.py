"""Files shared with flowgpu: safetensors, flowgpu checkpoints and run directories.

Plain Python + numpy + torch (Debian's python3-torch has no `safetensors` package):

* safetensors: 8-byte little-endian header length, a JSON header (name -> dtype, shape,
  data_offsets; optional string-valued ``__metadata__``), then the raw little-endian data.
  We read F32, F16, BF16, F64 and the integer dtypes; we write F32 (or the tensor's own
  F16/BF16/F32 dtype with ``keep_dtype``).
* flowgpu checkpoints (lib/io/checkpoint.ts): one safetensors file whose tensors are named
  ``model.<name>``, ``ema.<name>``, ``optim.<slot>.<i>`` (Adam's ``exp_avg.<i>`` and
  ``exp_avg_sq.<i>``, i = index in parameter order) and ``state.<name>`` (trainer state such
  as a StableVM memory bank, lib/train), with metadata ``format`` = ``flowgpu-checkpoint``,
  ``format_version`` = ``1`` (``2`` when there is trainer state), ``step``, ``data_crc32`` (CRC-32 of
  the data section, 8 lowercase hex digits), ``data_bytes``, and JSON strings ``config``,
  ``rng`` ({"seed", "counter"} of flowgpu's Philox generator) and ``extra``
  ({"optimizerStep", "emaUpdates", ...}).
* run directories (lib/io/run.ts): ``config.json``, ``metrics.jsonl`` (one JSON object per
  logged step), ``checkpoints/step-000123.safetensors`` plus ``checkpoints/last.safetensors``.
"""
import json
import os
import struct
import zlib

import numpy as np
import torch

FORMAT = "flowgpu-checkpoint"
FORMAT_VERSION = 2

_NP = {
    "F32": np.float32, "F64": np.float64, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U8": np.uint8, "BOOL": np.bool_,
}
_TORCH_TO_ST = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def atomic_write(path, data):
    """Write bytes to `path` through a temporary file and a rename."""
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _tensor_bytes(t, keep_dtype):
    t = t.detach().cpu().contiguous()
    if keep_dtype and t.dtype in (torch.float16, torch.bfloat16):
        dtype = _TORCH_TO_ST[t.dtype]
        raw = t.view(torch.int16).numpy().astype("<i2").tobytes()
    else:
        dtype = "F32"
        raw = t.to(torch.float32).numpy().astype("<f4").tobytes()
    return dtype, raw


def encode_safetensors(tensors, metadata=None, keep_dtype=False):
    """Bytes of a safetensors file holding `tensors` (name -> torch.Tensor), in order."""
    header = {}
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    blobs, off = [], 0
    for name, t in tensors.items():
        dtype, raw = _tensor_bytes(t, keep_dtype)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)  # 8-byte aligned data section, as flowgpu writes
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def decode_safetensors(data, name="<bytes>"):
    """(tensors, metadata) of safetensors bytes; tensors keep their stored dtype."""
    if len(data) < 8:
        raise ValueError(f"{name}: not a safetensors file (shorter than 8 bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise ValueError(f"{name}: header of {n} bytes runs past the end of the file")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    body = memoryview(data)[8 + n:]
    meta = header.pop("__metadata__", None) or {}
    out = {}
    for key, e in header.items():
        b, en = e["data_offsets"]
        raw = bytes(body[b:en])
        dt = e["dtype"]
        if dt == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            t = torch.from_numpy(u.view(np.float32).copy()).to(torch.bfloat16)
        elif dt in _NP:
            t = torch.from_numpy(np.frombuffer(raw, dtype=np.dtype(_NP[dt]).newbyteorder("<")).copy())
        else:
            raise ValueError(f'{name}: tensor "{key}" has unsupported dtype {dt}')
        out[key] = t.reshape(e["shape"])
    return out, meta


def save_safetensors(path, tensors, metadata=None, keep_dtype=False):
    """Write a safetensors file atomically."""
    atomic_write(path, encode_safetensors(tensors, metadata, keep_dtype))


def load_safetensors(path):
    """(tensors, metadata) of a safetensors file."""
    with open(path, "rb") as f:
        return decode_safetensors(f.read(), path)


def encode_checkpoint(model, step, ema=None, optim=None, config=None, rng=None, extra=None,
                      state=None):
    """Bytes of a flowgpu checkpoint (see the module docstring for the layout)."""
    tensors = {}
    for prefix, sec in (("model", model), ("ema", ema), ("optim", optim), ("state", state)):
        for k, v in (sec or {}).items():
            tensors[f"{prefix}.{k}"] = v
    body = b"".join(_tensor_bytes(t, False)[1] for t in tensors.values())
    meta = {
        "format": FORMAT,
        # Version 2 only when the state section is present, as lib/io/checkpoint.ts writes.
        "format_version": str(FORMAT_VERSION if state else 1),
        "step": str(int(step)),
        "data_crc32": f"{zlib.crc32(body) & 0xFFFFFFFF:08x}",
        "data_bytes": str(len(body)),
    }
    if rng is not None:
        meta["rng"] = json.dumps(rng, separators=(",", ":"))
    if config is not None:
        meta["config"] = json.dumps(config, separators=(",", ":"))
    if extra is not None:
        meta["extra"] = json.dumps(extra, separators=(",", ":"))
    return encode_safetensors(tensors, meta)


def load_checkpoint(path):
    """A flowgpu checkpoint as a dict: model, ema, optim (name -> f32 tensor), step,
    config, rng, extra. Verifies the format tag and the CRC-32 of the data section."""
    with open(path, "rb") as f:
        data = f.read()
    tensors, meta = decode_safetensors(data, path)
    if meta.get("format") != FORMAT:
        raise ValueError(f'{path}: not a flowgpu checkpoint (metadata format "{meta.get("format")}")')
    if int(meta.get("format_version", "1")) > FORMAT_VERSION:
        raise ValueError(f'{path}: checkpoint format version {meta["format_version"]} is newer than this reader')
    (n,) = struct.unpack("<Q", data[:8])
    body = data[8 + n:]
    if str(len(body)) != meta.get("data_bytes") or f"{zlib.crc32(body) & 0xFFFFFFFF:08x}" != meta.get("data_crc32"):
        raise ValueError(f"{path}: checksum or length mismatch: the file is truncated or corrupted")
    out = {"model": {}, "ema": {}, "optim": {}, "state": {}, "step": int(meta["step"])}
    for key, t in tensors.items():
        prefix, _, rest = key.partition(".")
        if prefix not in ("model", "ema", "optim", "state") or not rest:
            raise ValueError(f'{path}: tensor "{key}" has no model./ema./optim./state. prefix')
        out[prefix][rest] = t.to(torch.float32)
    for k in ("config", "rng", "extra"):
        out[k] = json.loads(meta[k]) if k in meta else None
    return out


def resolve_checkpoint(spec):
    """A checkpoint file, or a run directory's checkpoints/last.safetensors."""
    if os.path.isdir(spec):
        for cand in (os.path.join(spec, "checkpoints", "last.safetensors"),
                     os.path.join(spec, "last.safetensors")):
            if os.path.isfile(cand):
                return cand
        raise FileNotFoundError(f"{spec}: a directory without checkpoints/last.safetensors")
    if not os.path.isfile(spec):
        raise FileNotFoundError(f"{spec}: no such file or directory")
    return spec


class CheckpointManager:
    """Numbered checkpoints step-000123.safetensors plus last.safetensors, keeping `keep`."""

    def __init__(self, directory, keep=3):
        self.dir = directory
        self.keep = keep

    def path_for(self, step):
        return os.path.join(self.dir, f"step-{step:06d}.safetensors")

    @property
    def last_path(self):
        return os.path.join(self.dir, "last.safetensors")

    def steps(self):
        if not os.path.isdir(self.dir):
            return []
        out = []
        for name in os.listdir(self.dir):
            if name.startswith("step-") and name.endswith(".safetensors"):
                try:
                    out.append(int(name[5:-12]))
                except ValueError:
                    pass
        return sorted(out)

    def save(self, step, **ckpt):
        data = encode_checkpoint(step=step, **ckpt)
        path = self.path_for(step)
        atomic_write(path, data)
        atomic_write(self.last_path, data)
        steps = self.steps()
        for s in steps[:max(0, len(steps) - self.keep)]:
            try:
                os.remove(self.path_for(s))
            except OSError:
                pass
        return path


def append_metrics(path, step, record):
    """Append {"step": step, ...record} as one JSON line (NaN/inf written as null)."""
    clean = {k: (v if not isinstance(v, float) or np.isfinite(v) else None) for k, v in record.items()}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": step, **clean}) + "\n")
