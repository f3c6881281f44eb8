/**
 * @file Training checkpoints: one safetensors file holding the model (`model.*`), EMA
 * (`ema.*`), optimizer (`optim.*`) and trainer-state (`state.*`, e.g. a memory bank)
 * tensors, with step, RNG state, config and a CRC-32
 * of the data section in the metadata, written atomically; and a manager that keeps the
 * last few, maintains `last.safetensors`, and finds the newest valid one for `--resume`.
 * @module
 */
import { Tensor } from "../tensor.ts";
import { tensor } from "../ops/ops.ts";
import { checkInt } from "../_util.ts";
import { crc32, FileFormatError, readBytes } from "../formats/_bytes.ts";
import { atomicWrite, joinPath } from "../formats/fs.ts";
import {
  assembleSafetensors,
  decodeSafetensorsWithMetadata,
  type HostArray,
  layoutSafetensors,
  tensorsToHost,
} from "./safetensors.ts";

/** Format tag and version stored in every checkpoint's metadata. */
const FORMAT = "flowgpu-checkpoint";
/**
 * Version 2 added the `state.*` section. A file without one is still written as version 1,
 * so older readers keep reading it; one with trainer state says "version 2", which an older
 * reader reports as "newer than this library" instead of "unknown tensor prefix".
 */
const VERSION = 2;

/** What a checkpoint holds. */
export interface Checkpoint {
  /** Model parameters by name (PyTorch-style dotted names are fine). */
  model: Record<string, Tensor>;
  /** EMA copy of the parameters. */
  ema?: Record<string, Tensor>;
  /** Optimizer state tensors (flattened names, e.g. `m.layer.weight`). */
  optimizer?: Record<string, Tensor>;
  /**
   * Trainer state beyond model/EMA/optimizer (a StableVM memory bank, …): tensors, or host
   * `{shape, data: Float32Array}` arrays when the state lives on the host. Read back as tensors.
   */
  state?: Record<string, Tensor | HostArray>;
  /** The training step this state belongs to. */
  step: number;
  /** Generator state (`Generator.state()`) to resume the random stream. */
  rng?: { seed: number; counter: number };
  /** The run configuration (any JSON value). */
  config?: unknown;
  /** Anything else JSON-serialisable (e.g. optimizer scalars, bank cursor). */
  extra?: Record<string, unknown>;
}

/**
 * A checkpoint could not be read: truncated, corrupted, or not a flowgpu checkpoint.
 * @example
 * ```ts
 * import { CheckpointError, decodeCheckpoint } from "../../mod.ts";
 * try {
 *   decodeCheckpoint(new Uint8Array(3), "bad.safetensors");
 * } catch (e) {
 *   console.log(e instanceof RangeError, (e as Error).message);
 * }
 * console.log(typeof CheckpointError);
 * ```
 */
export class CheckpointError extends FileFormatError {
  /** Create an error naming the checkpoint file. */
  constructor(file: string, message: string) {
    super(file, message);
    this.name = "CheckpointError";
  }
}

const SECTIONS = [
  ["model", "model"],
  ["ema", "ema"],
  ["optimizer", "optim"],
  ["state", "state"],
] as const;

/**
 * Serialise a checkpoint to safetensors bytes (see {@linkcode saveCheckpoint}).
 *
 * @example
 * ```ts
 * import { decodeCheckpoint, encodeCheckpoint, tensor } from "../../mod.ts";
 * const bytes = await encodeCheckpoint({ model: { w: tensor([1, 2]) }, step: 3 });
 * const ck = decodeCheckpoint(bytes);
 * if (ck.step !== 3 || ck.model.w.size !== 2) throw new Error("bad");
 * ```
 */
export async function encodeCheckpoint(ckpt: Checkpoint): Promise<Uint8Array> {
  if (!ckpt || typeof ckpt !== "object" || !ckpt.model) {
    throw new TypeError("Expected checkpoint to be an object with a model record");
  }
  checkInt("checkpoint step", ckpt.step, 0);
  const host: Record<string, HostArray> = {};
  for (const [field, prefix] of SECTIONS) {
    const rec = ckpt[field];
    if (!rec) continue;
    for (const [k, v] of Object.entries(rec)) {
      if (v && !(v instanceof Tensor) && v.data instanceof Float32Array && Array.isArray(v.shape)) {
        host[`${prefix}.${k}`] = { shape: [...v.shape], data: v.data };
      } else Object.assign(host, await tensorsToHost({ [k]: v as Tensor }, `${prefix}.`));
    }
  }
  const { entries, data } = layoutSafetensors(host);
  const hasState = ckpt.state !== undefined && Object.keys(ckpt.state).length > 0;
  const meta: Record<string, string> = {
    format: FORMAT,
    format_version: String(hasState ? 2 : 1),
    step: String(ckpt.step),
    data_crc32: crc32(data).toString(16).padStart(8, "0"),
    data_bytes: String(data.length),
  };
  if (ckpt.rng) meta.rng = JSON.stringify(ckpt.rng);
  if (ckpt.config !== undefined) meta.config = JSON.stringify(ckpt.config);
  if (ckpt.extra !== undefined) meta.extra = JSON.stringify(ckpt.extra);
  return assembleSafetensors(entries, data, meta);
}

/**
 * Parse checkpoint bytes, verifying structure, format tag and data checksum; raises a
 * {@linkcode CheckpointError} naming `name` when the file is truncated or corrupted.
 *
 * @example
 * ```ts
 * import { decodeCheckpoint, encodeCheckpoint, tensor } from "../../mod.ts";
 * const bytes = await encodeCheckpoint({ model: { w: tensor([1]) }, step: 1 });
 * let failed = false;
 * try { decodeCheckpoint(bytes.subarray(0, bytes.length - 1)); } catch { failed = true; }
 * if (!failed) throw new Error("truncation not detected");
 * ```
 */
export function decodeCheckpoint(bytes: Uint8Array, name = "<bytes>"): Checkpoint {
  let dec;
  try {
    dec = decodeSafetensorsWithMetadata(bytes, name);
  } catch (e) {
    if (e instanceof FileFormatError) {
      throw new CheckpointError(
        name,
        `not a readable checkpoint (truncated or corrupted): ${e.message.slice(name.length + 2)}`,
      );
    }
    throw e;
  }
  const { tensors, metadata: m } = dec;
  if (m.format !== FORMAT) {
    throw new CheckpointError(name, `not a flowgpu checkpoint (metadata format "${m.format}")`);
  }
  if (Number(m.format_version) > VERSION) {
    throw new CheckpointError(
      name,
      `checkpoint format version ${m.format_version} is newer than this library (${VERSION})`,
    );
  }
  const hlen = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  const data = bytes.subarray(8 + hlen);
  if (String(data.length) !== m.data_bytes) {
    throw new CheckpointError(
      name,
      `data section is ${data.length} bytes but ${m.data_bytes} were written (truncated or extended)`,
    );
  }
  const crc = crc32(data).toString(16).padStart(8, "0");
  if (crc !== m.data_crc32) {
    throw new CheckpointError(
      name,
      `checksum mismatch (CRC-32 ${crc}, expected ${m.data_crc32}): the file is corrupted`,
    );
  }
  const parse = (k: string): unknown => {
    try {
      return JSON.parse(m[k]!);
    } catch {
      throw new CheckpointError(name, `metadata "${k}" is not valid JSON`);
    }
  };
  const step = Number(m.step);
  if (!Number.isInteger(step) || step < 0) {
    throw new CheckpointError(name, `metadata step "${m.step}" is not an integer >= 0`);
  }
  const out: Checkpoint = { model: {}, step };
  for (const [key, arr] of Object.entries(tensors)) {
    const dot = key.indexOf(".");
    const prefix = key.slice(0, dot), rest = key.slice(dot + 1);
    const sec = SECTIONS.find(([, p]) => p === prefix)?.[0];
    if (dot < 0 || !sec) {
      throw new CheckpointError(name, `tensor "${key}" has no model./ema./optim./state. prefix`);
    }
    ((out[sec] ??= {}) as Record<string, Tensor>)[rest] = tensor(arr.data, arr.shape);
  }
  if (m.rng !== undefined) out.rng = parse("rng") as Checkpoint["rng"];
  if (m.config !== undefined) out.config = parse("config");
  if (m.extra !== undefined) out.extra = parse("extra") as Record<string, unknown>;
  return out;
}

/**
 * Write a checkpoint to one safetensors file, atomically (the previous file at `path`
 * survives a failed write).
 *
 * @example
 * ```ts
 * import { loadCheckpoint, saveCheckpoint, tensor } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * await saveCheckpoint(`${dir}/c.safetensors`, {
 *   model: { "fc.weight": tensor([[1, 2]]) }, step: 10, rng: { seed: 0, counter: 5 },
 *   config: { lr: 1e-3 },
 * });
 * const ck = await loadCheckpoint(`${dir}/c.safetensors`);
 * if (ck.step !== 10 || ck.rng?.counter !== 5) throw new Error("bad");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function saveCheckpoint(path: string, ckpt: Checkpoint): Promise<void> {
  await atomicWrite(path, await encodeCheckpoint(ckpt));
}

/**
 * Read and verify a checkpoint (path or URL); a {@linkcode CheckpointError} names the
 * file when it is truncated or corrupted.
 *
 * @example
 * ```ts
 * import { loadCheckpoint, saveCheckpoint, tensor } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * await saveCheckpoint(`${dir}/c.safetensors`, { model: { b: tensor([0]) }, step: 0 });
 * const { model } = await loadCheckpoint(`${dir}/c.safetensors`);
 * if (!model.b) throw new Error("bad");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function loadCheckpoint(path: string | URL): Promise<Checkpoint> {
  const s = String(path);
  let bytes: Uint8Array;
  try {
    bytes = await readBytes(path);
  } catch (e) {
    if (e instanceof FileFormatError) throw new CheckpointError(s, e.message.slice(s.length + 2));
    throw e;
  }
  return decodeCheckpoint(bytes, s);
}

/** Options of {@linkcode CheckpointManager}. */
export interface CheckpointManagerOptions {
  /** How many `step-*.safetensors` files to keep (default 3). */
  keep?: number;
  /** Where warnings about skipped files go (default `console.warn`). */
  warn?: (msg: string) => void;
}

/**
 * Keeps numbered checkpoints `step-000123.safetensors` in a directory plus
 * `last.safetensors`, pruning all but the newest `keep`; `latest()` returns the newest
 * checkpoint that loads and verifies, skipping corrupt ones with a warning.
 *
 * @example
 * ```ts
 * import { CheckpointManager, tensor } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * const mgr = new CheckpointManager(`${dir}/checkpoints`, { keep: 2 });
 * for (const step of [1, 2, 3]) await mgr.save(step, { model: { w: tensor([step]) } });
 * const found = await mgr.latest();
 * if (found?.checkpoint.step !== 3 || (await mgr.steps()).length !== 2) throw new Error("bad");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class CheckpointManager {
  /** Directory holding the checkpoints. */
  readonly dir: string;
  /** How many numbered checkpoints are kept. */
  readonly keep: number;
  #warn: (msg: string) => void;

  /** Manage checkpoints in `dir` (created on first save). */
  constructor(dir: string, opts: CheckpointManagerOptions = {}) {
    if (typeof dir !== "string" || dir === "") {
      throw new TypeError(`Expected checkpoint dir to be a non-empty string but found ${dir}`);
    }
    this.dir = dir;
    this.keep = checkInt("checkpoint keep", opts.keep ?? 3, 1);
    this.#warn = opts.warn ?? ((m) => console.warn(m));
  }

  /** Path of the numbered checkpoint for `step`. */
  pathFor(step: number): string {
    return joinPath(this.dir, `step-${String(step).padStart(6, "0")}.safetensors`);
  }

  /** Path of `last.safetensors`. */
  get lastPath(): string {
    return joinPath(this.dir, "last.safetensors");
  }

  /** Steps of the numbered checkpoints present, ascending. */
  async steps(): Promise<number[]> {
    const out: number[] = [];
    try {
      for await (const e of Deno.readDir(this.dir)) {
        const m = /^step-(\d+)\.safetensors$/.exec(e.name);
        if (m) out.push(Number(m[1]));
      }
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return [];
      throw e;
    }
    return out.sort((a, b) => a - b);
  }

  /**
   * Write the checkpoint for `step` (numbered file, then `last.safetensors`, both atomic)
   * and prune old numbered files. Returns the numbered file's path.
   */
  async save(step: number, ckpt: Omit<Checkpoint, "step">): Promise<string> {
    checkInt("checkpoint step", step, 0);
    const bytes = await encodeCheckpoint({ ...ckpt, step });
    const path = this.pathFor(step);
    await atomicWrite(path, bytes);
    await atomicWrite(this.lastPath, bytes);
    const steps = await this.steps();
    for (const s of steps.slice(0, Math.max(0, steps.length - this.keep))) {
      await Deno.remove(this.pathFor(s)).catch(() => {});
    }
    return path;
  }

  /**
   * The newest checkpoint that loads and verifies (numbered files newest first, then
   * `last.safetensors`), or `null` when none does. Corrupt files are skipped with a warning.
   */
  async latest(): Promise<{ path: string; checkpoint: Checkpoint } | null> {
    // Numbered files are written before last.safetensors, so the newest valid numbered
    // file is never older than a valid last.safetensors; the latter is the fallback when
    // every numbered file is missing or corrupt.
    const paths = (await this.steps()).reverse().map((s) => this.pathFor(s));
    paths.push(this.lastPath);
    for (const path of paths) {
      try {
        return { path, checkpoint: await loadCheckpoint(path) };
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) continue;
        this.#warn(`Skipping checkpoint ${path}: ${(e as Error).message}`);
      }
    }
    return null;
  }
}
