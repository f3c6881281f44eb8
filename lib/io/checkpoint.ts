/**
 * @file Training checkpoints: one safetensors file holding the model (`model.*`), EMA
 * (`ema.*`) and optimizer (`optim.*`) tensors, with step, RNG state and config in the
 * metadata, written atomically; and a manager that keeps the last few, maintains
 * `last.safetensors`, and finds the newest valid one for `--resume`.
 *
 * Integrity (format version 2): the header starts with `{"__metadata__":{"file_crc32":"…"`,
 * a CRC-32 of the whole file (header and data) computed with those 8 hex digits set to
 * `00000000`, so a damaged step, RNG state, config or tensor name is refused, not loaded.
 * `data_crc32`/`data_bytes` (of the data section alone) are kept as in version 1. Version 1
 * files, whose checksum covers only the data, are still read; step and RNG state are
 * validated in both.
 *
 * Trainer state (`state.*` tensors, e.g. a StableVM memory bank) sits beside the model, EMA and
 * optimizer sections.
 * @module
 */
import { Tensor } from "../tensor.ts";
import { tensor } from "../ops/ops.ts";
import { checkInt, denoApi, isNotFound } from "../_util.ts";
import {
  crc32,
  type DecodeOptions,
  FileFormatError,
  type LoadOptions,
  readBytes,
  setOwn,
} from "../formats/_bytes.ts";
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
const VERSION = 2;
/** The header of a version-2 checkpoint starts with this, then 8 hex digits and `"`. */
const PREFIX = new TextEncoder().encode('{"__metadata__":{"file_crc32":"');
const ZEROS = new TextEncoder().encode("00000000");
/** Metadata keys a version-1 checkpoint may hold. */
const V1_KEYS = new Set([
  "format",
  "format_version",
  "step",
  "data_crc32",
  "data_bytes",
  "rng",
  "config",
  "extra",
]);

/** CRC-32 of a whole file with the 8 hex digits at `at` taken as `00000000`. */
function fileCrc(bytes: Uint8Array, at: number): string {
  let c = crc32(bytes.subarray(0, at));
  c = crc32(ZEROS, c);
  c = crc32(bytes.subarray(at + 8), c);
  return c.toString(16).padStart(8, "0");
}

/**
 * Check a generator state: `seed` and `counter` integers in [0, 2^53), other fields words
 * (integers in [0, 2^32)) or arrays of words. Returns a message, or null when valid.
 */
function rngProblem(rng: unknown): string | null {
  if (typeof rng !== "object" || rng === null || Array.isArray(rng)) {
    return `expected an object {seed, counter} but found ${JSON.stringify(rng)}`;
  }
  const r = rng as Record<string, unknown>;
  for (const k of ["seed", "counter"]) {
    const v = r[k];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
      return `"${k}" must be an integer in [0, 2^53) but is ${JSON.stringify(v)}`;
    }
  }
  const word = (v: unknown) =>
    typeof v === "number" && Number.isInteger(v) && v >= 0 && v < 2 ** 32;
  for (const [k, v] of Object.entries(r)) {
    if (k === "seed" || k === "counter") continue;
    if (!(word(v) || (Array.isArray(v) && v.every(word)))) {
      return `"${k}" must be a word or words (integers in [0, 2^32)) but is ${JSON.stringify(v)}`;
    }
  }
  return null;
}

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
 * import { strict as assert } from "node:assert";
 * import { CheckpointError, decodeCheckpoint, FileFormatError } from "../../mod.ts";
 * // Three bytes cannot hold the 8-byte header length: refused, naming the file.
 * assert.throws(
 *   () => decodeCheckpoint(new Uint8Array(3), "bad.safetensors"),
 *   (e) => e instanceof RangeError && (e as Error).message.includes("bad.safetensors"),
 * );
 * assert.ok(new CheckpointError("c.safetensors", "no step") instanceof FileFormatError);
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
 * import { strict as assert } from "node:assert";
 * import { decodeCheckpoint, encodeCheckpoint, tensor } from "../../mod.ts";
 * const bytes = await encodeCheckpoint({ model: { w: tensor([1, 2]) }, step: 3 });
 * const ck = decodeCheckpoint(bytes);
 * assert.equal(ck.step, 3);
 * assert.deepEqual([...await ck.model.w!.data()], [1, 2]);
 * ```
 */
export async function encodeCheckpoint(ckpt: Checkpoint): Promise<Uint8Array> {
  if (!ckpt || typeof ckpt !== "object" || !ckpt.model) {
    throw new TypeError("Expected checkpoint to be an object with a model record");
  }
  checkInt("checkpoint step", ckpt.step, 0, Number.MAX_SAFE_INTEGER);
  if (ckpt.rng !== undefined) {
    const bad = rngProblem(ckpt.rng);
    if (bad) throw new RangeError(`Expected checkpoint rng to be a generator state: ${bad}`);
  }
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
  const meta: Record<string, string> = {
    file_crc32: "00000000", // first: patched below with the CRC of the whole file
    format: FORMAT,
    format_version: String(VERSION),
    step: String(ckpt.step),
    data_crc32: crc32(data).toString(16).padStart(8, "0"),
    data_bytes: String(data.length),
  };
  if (ckpt.rng) meta.rng = JSON.stringify(ckpt.rng);
  if (ckpt.config !== undefined) meta.config = JSON.stringify(ckpt.config);
  if (ckpt.extra !== undefined) meta.extra = JSON.stringify(ckpt.extra);
  const out = assembleSafetensors(entries, data, meta);
  const at = 8 + PREFIX.length;
  if (!PREFIX.every((b, i) => out[8 + i] === b)) {
    throw new Error("internal: checkpoint header does not start with file_crc32");
  }
  out.set(new TextEncoder().encode(fileCrc(out, at)), at);
  return out;
}

/**
 * Parse checkpoint bytes, verifying structure, format tag, the checksum (of the whole file
 * for version 2, of the data section for version 1), the step (an integer ≥ 0) and the RNG
 * state (integers in range); raises a {@linkcode CheckpointError} naming `name` when the
 * file is truncated, corrupted or inconsistent.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { decodeCheckpoint, encodeCheckpoint, tensor } from "../../mod.ts";
 * const bytes = await encodeCheckpoint({ model: { w: tensor([1]) }, step: 1500 });
 * assert.throws(() => decodeCheckpoint(bytes.subarray(0, bytes.length - 1))); // truncated
 * // A damaged header (here the step 1500 → 1501) is refused too.
 * const text = new TextDecoder().decode(bytes).replace('"step":"1500"', '"step":"1501"');
 * assert.notEqual(text, new TextDecoder().decode(bytes));
 * assert.throws(() => decodeCheckpoint(new TextEncoder().encode(text)));
 * ```
 */
export function decodeCheckpoint(
  bytes: Uint8Array,
  name = "<bytes>",
  opts: DecodeOptions = {},
): Checkpoint {
  let dec;
  try {
    dec = decodeSafetensorsWithMetadata(bytes, name, opts);
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
  if (m.format_version !== "1" && m.format_version !== "2") {
    throw new CheckpointError(
      name,
      `metadata format_version "${m.format_version}" is not 1 or 2 (file corrupted)`,
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
  const at = 8 + PREFIX.length;
  const hasPrefix = bytes.length >= at + 9 && PREFIX.every((b, i) => bytes[8 + i] === b) &&
    bytes[at + 8] === 0x22;
  if (hasPrefix || m.format_version !== "1") {
    // Version 2: the checksum covers the header (step, RNG, config, names) and the data.
    if (!hasPrefix || typeof m.file_crc32 !== "string") {
      throw new CheckpointError(
        name,
        "header does not start with its file_crc32 checksum (file corrupted)",
      );
    }
    const crc = fileCrc(bytes, at);
    if (crc !== m.file_crc32) {
      throw new CheckpointError(
        name,
        `checksum mismatch (CRC-32 ${crc}, expected ${m.file_crc32}): the file is corrupted`,
      );
    }
  } else {
    // Version 1 (written before the header was checksummed): only the data is covered.
    const extra = Object.keys(m).find((k) => !V1_KEYS.has(k));
    if (extra !== undefined) {
      throw new CheckpointError(
        name,
        `version-1 checkpoint has an unknown metadata key "${extra}" (file corrupted)`,
      );
    }
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
  if (!/^(0|[1-9][0-9]*)$/.test(m.step ?? "") || !Number.isSafeInteger(step)) {
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
    setOwn(out[sec] ??= {}, rest, tensor(arr.data, arr.shape));
  }
  if (m.rng !== undefined) {
    const rng = parse("rng");
    const bad = rngProblem(rng);
    if (bad) throw new CheckpointError(name, `metadata rng is not a generator state: ${bad}`);
    out.rng = rng as Checkpoint["rng"];
  }
  if (m.config !== undefined) out.config = parse("config");
  if (m.extra !== undefined) {
    const extra = parse("extra");
    if (typeof extra !== "object" || extra === null || Array.isArray(extra)) {
      throw new CheckpointError(name, `metadata extra is not a JSON object`);
    }
    out.extra = extra as Record<string, unknown>;
  }
  return out;
}

/**
 * Write a checkpoint to one safetensors file, atomically (the previous file at `path`
 * survives a failed write).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { loadCheckpoint, saveCheckpoint, tensor } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * await saveCheckpoint(`${dir}/c.safetensors`, {
 *   model: { "fc.weight": tensor([[1, 2]]) }, step: 10, rng: { seed: 0, counter: 5 },
 *   config: { lr: 1e-3 },
 * });
 * const ck = await loadCheckpoint(`${dir}/c.safetensors`);
 * assert.equal(ck.step, 10);
 * assert.deepEqual(ck.rng, { seed: 0, counter: 5 });
 * assert.deepEqual([...await ck.model["fc.weight"]!.data()], [1, 2]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function saveCheckpoint(path: string, ckpt: Checkpoint): Promise<void> {
  await atomicWrite(path, await encodeCheckpoint(ckpt));
}

/**
 * Read and verify a checkpoint (path or URL); a {@linkcode CheckpointError} names the
 * file when it is truncated or corrupted. A URL fetch gives up after `opts.timeoutMs`
 * (default 60 s) with a `FetchError` naming the URL.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { loadCheckpoint, saveCheckpoint, tensor } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * await saveCheckpoint(`${dir}/c.safetensors`, { model: { b: tensor([0.25]) }, step: 0 });
 * const { model, step } = await loadCheckpoint(`${dir}/c.safetensors`);
 * assert.equal(step, 0);
 * assert.deepEqual([...await model.b!.data()], [0.25]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function loadCheckpoint(
  path: string | URL,
  opts: LoadOptions = {},
): Promise<Checkpoint> {
  const s = String(path);
  let bytes: Uint8Array;
  try {
    bytes = await readBytes(path, opts, "loadCheckpoint", "decodeCheckpoint");
  } catch (e) {
    if (e instanceof FileFormatError) throw new CheckpointError(s, e.message.slice(s.length + 2));
    throw e;
  }
  return decodeCheckpoint(bytes, s, opts);
}

const FILES_ONLY = "keep checkpoints as bytes (encodeCheckpoint / decodeCheckpoint)";

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
 * import { strict as assert } from "node:assert";
 * import { CheckpointManager, tensor } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * const mgr = new CheckpointManager(`${dir}/checkpoints`, { keep: 2 });
 * for (const step of [1, 2, 3]) await mgr.save(step, { model: { w: tensor([step]) } });
 * const found = await mgr.latest();
 * assert.equal(found?.checkpoint.step, 3);
 * assert.deepEqual([...await found!.checkpoint.model.w!.data()], [3]);
 * assert.deepEqual(await mgr.steps(), [2, 3]); // keep: 2 dropped step 1
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
      for await (const e of denoApi("CheckpointManager", FILES_ONLY).readDir(this.dir)) {
        const m = /^step-(\d+)\.safetensors$/.exec(e.name);
        if (m) out.push(Number(m[1]));
      }
    } catch (e) {
      if (isNotFound(e)) return [];
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
      await denoApi("CheckpointManager", FILES_ONLY).remove(this.pathFor(s)).catch(() => {});
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
        if (isNotFound(e)) continue;
        this.#warn(`Skipping checkpoint ${path}: ${(e as Error).message}`);
      }
    }
    return null;
  }
}
