/**
 * @file safetensors read/write (https://github.com/huggingface/safetensors): an 8-byte
 * little-endian header length, a JSON header mapping names to dtype, shape and byte
 * offsets (plus an optional `__metadata__` string map), then the raw little-endian data.
 * We write F32; we read F32, F16, BF16, F64 and the integer/bool dtypes, converting to f32.
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { tensor } from "../ops/ops.ts";
import {
  checkDeclared,
  type DecodeOptions,
  FileFormatError,
  type LoadOptions,
  maxBytesOf,
  readBytes,
  setOwn,
  viewOf,
} from "../formats/_bytes.ts";
import { atomicWrite } from "../formats/fs.ts";

/** A host-side array: a shape and its row-major f32 values. */
export interface HostArray {
  /** Extents of each axis. */
  shape: readonly number[];
  /** Row-major values (`shape` product many). */
  data: Float32Array;
}

/** A decoded safetensors entry: its stored dtype, shape and values converted to f32. */
export interface DecodedArray extends HostArray {
  /** The dtype as stored in the file (`F32`, `F16`, `BF16`, `F64`, `I64`, …). */
  dtype: string;
}

const DTYPE_BYTES: Record<string, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
};

/** Largest header we accept (the reference implementation's limit is 100 MB). */
const MAX_HEADER = 100_000_000;

/**
 * Convert an IEEE half-precision bit pattern to a number.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { f16ToF32 } from "../../mod.ts";
 * // IEEE binary16: 0x3c00 = 1, 0xc000 = −2, 0x3555 ≈ 1/3 (0.333251953125), 0x0001 = 2^-24.
 * assert.equal(f16ToF32(0x3c00), 1);
 * assert.equal(f16ToF32(0xc000), -2);
 * assert.equal(f16ToF32(0x3555), 0.333251953125);
 * assert.equal(f16ToF32(0x0001), 2 ** -24);
 * ```
 */
export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/**
 * Convert a bfloat16 bit pattern (the top half of an f32) to a number.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { bf16ToF32 } from "../../mod.ts";
 * // bfloat16 is the top half of a float32: 0x3f80 = 1, 0xc040 = −3.
 * assert.equal(bf16ToF32(0x3f80), 1);
 * assert.equal(bf16ToF32(0xc040), -3);
 * ```
 */
export function bf16ToF32(b: number): number {
  const u = new Uint32Array([(b & 0xffff) << 16]);
  return new Float32Array(u.buffer)[0]!;
}

function convert(bytes: Uint8Array, dtype: string, n: number): Float32Array {
  const out = new Float32Array(n);
  const dv = viewOf(bytes);
  switch (dtype) {
    case "F32":
      if (bytes.byteOffset % 4 === 0) {
        out.set(new Float32Array(bytes.buffer, bytes.byteOffset, n));
      } else for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
      break;
    case "F64":
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(8 * i, true);
      break;
    case "F16":
      for (let i = 0; i < n; i++) out[i] = f16ToF32(dv.getUint16(2 * i, true));
      break;
    case "BF16":
      for (let i = 0; i < n; i++) out[i] = bf16ToF32(dv.getUint16(2 * i, true));
      break;
    case "I64":
      for (let i = 0; i < n; i++) out[i] = Number(dv.getBigInt64(8 * i, true));
      break;
    case "U64":
      for (let i = 0; i < n; i++) out[i] = Number(dv.getBigUint64(8 * i, true));
      break;
    case "I32":
      for (let i = 0; i < n; i++) out[i] = dv.getInt32(4 * i, true);
      break;
    case "U32":
      for (let i = 0; i < n; i++) out[i] = dv.getUint32(4 * i, true);
      break;
    case "I16":
      for (let i = 0; i < n; i++) out[i] = dv.getInt16(2 * i, true);
      break;
    case "U16":
      for (let i = 0; i < n; i++) out[i] = dv.getUint16(2 * i, true);
      break;
    case "I8":
      for (let i = 0; i < n; i++) out[i] = dv.getInt8(i);
      break;
    default: // U8, BOOL
      for (let i = 0; i < n; i++) out[i] = bytes[i]!;
  }
  return out;
}

/** @internal Lay out F32 tensors: the JSON header entries and the data section. */
export function layoutSafetensors(
  tensors: Record<string, HostArray>,
): { entries: Record<string, unknown>; data: Uint8Array } {
  let total = 0;
  const names = Object.keys(tensors);
  for (const name of names) {
    const t = tensors[name]!;
    if (name === "__metadata__") {
      throw new RangeError(`Expected tensor names other than "__metadata__"`);
    }
    if (!t || !(t.data instanceof Float32Array) || !Array.isArray(t.shape)) {
      throw new TypeError(`Expected tensor "${name}" to be {shape: number[], data: Float32Array}`);
    }
    const size = t.shape.reduce((a, b) => a * b, 1);
    if (t.shape.some((d) => !Number.isInteger(d) || d < 0) || size !== t.data.length) {
      throw new RangeError(
        `Expected tensor "${name}" to have ${size} values for shape [${
          t.shape.join(", ")
        }] but found ${t.data.length}`,
      );
    }
    total += 4 * size;
  }
  const data = new Uint8Array(total);
  const entries: Record<string, unknown> = {};
  let off = 0;
  for (const name of names) {
    const t = tensors[name]!;
    const nb = 4 * t.data.length;
    data.set(new Uint8Array(t.data.buffer, t.data.byteOffset, nb), off);
    entries[name] = { dtype: "F32", shape: [...t.shape], data_offsets: [off, off + nb] };
    off += nb;
  }
  return { entries, data };
}

/** @internal Assemble header entries, metadata and data into a file. */
export function assembleSafetensors(
  entries: Record<string, unknown>,
  data: Uint8Array,
  metadata?: Record<string, string>,
): Uint8Array {
  const head: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") {
        throw new TypeError(`Expected metadata "${k}" to be a string but found ${typeof v}`);
      }
    }
    head.__metadata__ = metadata;
  }
  Object.assign(head, entries);
  let json = new TextEncoder().encode(JSON.stringify(head));
  // Pad with spaces so the data section starts 8-byte aligned (the spec allows
  // trailing whitespace in the header), letting readers view f32/f64 data in place.
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }
  const out = new Uint8Array(8 + json.length + data.length);
  viewOf(out).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

/**
 * Encode named f32 arrays (and optional string metadata) as a safetensors file.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { decodeSafetensors, encodeSafetensors } from "../../mod.ts";
 * const bytes = encodeSafetensors({ w: { shape: [2], data: new Float32Array([1, 2]) } });
 * // 8-byte little-endian header length, JSON header, then the 8 data bytes.
 * const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
 * assert.equal(bytes.length, 8 + n + 8);
 * const back = decodeSafetensors(bytes);
 * assert.deepEqual([...back.w!.data], [1, 2]);
 * ```
 */
export function encodeSafetensors(
  tensors: Record<string, HostArray>,
  metadata?: Record<string, string>,
): Uint8Array {
  const { entries, data } = layoutSafetensors(tensors);
  return assembleSafetensors(entries, data, metadata);
}

/**
 * Decode a safetensors file into f32 arrays plus its `__metadata__` map. Every structural
 * problem (header length, JSON, missing fields, offsets out of range or overlapping,
 * unknown dtype, shape vs. byte size, f32 values above `opts.maxBytes` in total) raises a
 * {@linkcode FileFormatError} naming `name` and the tensor.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { decodeSafetensorsWithMetadata, encodeSafetensors } from "../../mod.ts";
 * const bytes = encodeSafetensors({ b: { shape: [], data: new Float32Array([3]) } }, { step: "7" });
 * const { tensors, metadata } = decodeSafetensorsWithMetadata(bytes);
 * assert.equal(metadata.step, "7");
 * assert.deepEqual([...tensors.b!.data], [3]);
 * ```
 */
export function decodeSafetensorsWithMetadata(
  bytes: Uint8Array,
  name = "<bytes>",
  opts: DecodeOptions = {},
): { tensors: Record<string, DecodedArray>; metadata: Record<string, string> } {
  const maxBytes = maxBytesOf(opts);
  if (!(bytes instanceof Uint8Array)) {
    throw new TypeError(`Expected safetensors bytes to be a Uint8Array but found ${typeof bytes}`);
  }
  if (bytes.length < 8) {
    throw new FileFormatError(name, `too short for a safetensors file (${bytes.length} bytes)`);
  }
  const n = viewOf(bytes).getBigUint64(0, true);
  if (n > BigInt(Math.min(MAX_HEADER, bytes.length - 8))) {
    throw new FileFormatError(
      name,
      `safetensors header length ${n} exceeds the file (${bytes.length} bytes) or the 100 MB limit`,
    );
  }
  const hlen = Number(n);
  let header: unknown;
  try {
    header = JSON.parse(
      new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + hlen)),
    );
  } catch (e) {
    throw new FileFormatError(
      name,
      `safetensors header is not valid JSON (${(e as Error).message})`,
    );
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    throw new FileFormatError(name, "safetensors header must be a JSON object");
  }
  const body = bytes.subarray(8 + hlen);
  const metadata: Record<string, string> = {};
  const tensors: Record<string, DecodedArray> = {};
  const spans: [number, number, string][] = [];
  const entries: {
    key: string;
    dtype: string;
    shape: number[];
    begin: number;
    end: number;
    size: number;
  }[] = [];
  let total = 0;
  for (const [key, raw] of Object.entries(header as Record<string, unknown>)) {
    if (key === "__metadata__") {
      if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
        throw new FileFormatError(name, "__metadata__ must be an object of strings");
      }
      for (const [mk, mv] of Object.entries(raw)) {
        if (typeof mv !== "string") {
          throw new FileFormatError(name, `__metadata__ entry "${mk}" must be a string`);
        }
        setOwn(metadata, mk, mv);
      }
      continue;
    }
    const bad = (what: string) => new FileFormatError(name, `tensor "${key}": ${what}`);
    if (typeof raw !== "object" || raw === null) throw bad("header entry must be an object");
    const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e.dtype !== "string") throw bad("missing dtype");
    if (!Array.isArray(e.shape) || e.shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
      throw bad("missing or invalid shape (expected a list of non-negative integers)");
    }
    if (
      !Array.isArray(e.data_offsets) || e.data_offsets.length !== 2 ||
      e.data_offsets.some((d) => !Number.isSafeInteger(d) || d < 0)
    ) {
      throw bad("missing or invalid data_offsets (expected [begin, end])");
    }
    const width = DTYPE_BYTES[e.dtype];
    if (width === undefined) {
      throw bad(
        `unknown dtype "${e.dtype}" (supported: ${Object.keys(DTYPE_BYTES).join(", ")})`,
      );
    }
    const [begin, end] = e.data_offsets as [number, number];
    if (end < begin) throw bad(`data_offsets [${begin}, ${end}] end before begin`);
    if (end > body.length) {
      throw bad(
        `data_offsets [${begin}, ${end}] run past the end of the data section (${body.length} bytes; file truncated?)`,
      );
    }
    const size = (e.shape as number[]).reduce((a, b) => a * b, 1);
    if (size * width !== end - begin) {
      throw bad(
        `shape [${(e.shape as number[]).join(", ")}] of ${e.dtype} needs ${
          size * width
        } bytes but data_offsets span ${end - begin}`,
      );
    }
    spans.push([begin, end, key]);
    entries.push({ key, dtype: e.dtype, shape: [...e.shape as number[]], begin, end, size });
    total += 4 * size;
  }
  // Check the layout before converting anything: overlapping spans would let a small file
  // make us convert the same bytes many times over.
  spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let prevEnd = 0, prevKey = "";
  for (const [b, e, k] of spans) {
    if (e === b) continue; // empty tensors occupy no bytes
    if (b < prevEnd) {
      throw new FileFormatError(
        name,
        `tensor "${k}": data_offsets [${b}, ${e}] overlap tensor "${prevKey}" (ends at ${prevEnd})`,
      );
    }
    prevEnd = e;
    prevKey = k;
  }
  checkDeclared(name, "safetensors tensors as f32", total, maxBytes);
  for (const t of entries) {
    setOwn(tensors, t.key, {
      dtype: t.dtype,
      shape: t.shape,
      data: convert(body.subarray(t.begin, t.end), t.dtype, t.size),
    });
  }
  return { tensors, metadata };
}

/**
 * Decode a safetensors file into f32 arrays (see {@linkcode decodeSafetensorsWithMetadata}
 * for the metadata).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { decodeSafetensors, encodeSafetensors } from "../../mod.ts";
 * const t = decodeSafetensors(encodeSafetensors({ x: { shape: [1, 1], data: new Float32Array([5]) } }));
 * assert.equal(t.x!.dtype, "F32");
 * assert.deepEqual([...t.x!.shape], [1, 1]);
 * assert.deepEqual([...t.x!.data], [5]);
 * ```
 */
export function decodeSafetensors(
  bytes: Uint8Array,
  name = "<bytes>",
  opts: DecodeOptions = {},
): Record<string, DecodedArray> {
  return decodeSafetensorsWithMetadata(bytes, name, opts).tensors;
}

/** @internal Download tensors to host arrays. */
export async function tensorsToHost(
  tensors: Record<string, Tensor>,
  prefix = "",
): Promise<Record<string, HostArray>> {
  const out: Record<string, HostArray> = {};
  for (const [k, t] of Object.entries(tensors)) {
    if (!t || typeof (t as Tensor).data !== "function") {
      throw new TypeError(`Expected "${prefix}${k}" to be a Tensor`);
    }
    out[prefix + k] = { shape: [...t.shape], data: await t.data() };
  }
  return out;
}

/**
 * Write tensors to a safetensors file atomically (F32).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { loadSafetensors, saveSafetensors, tensor } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * await saveSafetensors(`${dir}/w.safetensors`, { w: tensor([1, 2, 3]) }, { note: "hi" });
 * const back = await loadSafetensors(`${dir}/w.safetensors`);
 * assert.deepEqual([...await back.w!.data()], [1, 2, 3]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function saveSafetensors(
  path: string,
  tensors: Record<string, Tensor>,
  metadata?: Record<string, string>,
): Promise<void> {
  await atomicWrite(path, encodeSafetensors(await tensorsToHost(tensors), metadata));
}

/**
 * Turn safetensors bytes into tensors on the current backend.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { encodeSafetensors, loadSafetensorsFromBytes } from "../../mod.ts";
 * const bytes = encodeSafetensors({ w: { shape: [2], data: new Float32Array([1, 2]) } });
 * const { w } = loadSafetensorsFromBytes(bytes);
 * assert.deepEqual([...await w!.data()], [1, 2]);
 * ```
 */
export function loadSafetensorsFromBytes(
  bytes: Uint8Array,
  name = "<bytes>",
  opts: DecodeOptions = {},
): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [k, a] of Object.entries(decodeSafetensors(bytes, name, opts))) {
    setOwn(out, k, tensor(a.data, a.shape));
  }
  return out;
}

/**
 * Read a safetensors file from a path, a `file:` URL or an `http(s)://` URL (fetched,
 * with a timeout of `opts.timeoutMs`, default 60 s, after which a {@linkcode FetchError}
 * names the URL) into tensors.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { loadSafetensors, saveSafetensors, zeros } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * await saveSafetensors(`${dir}/z.safetensors`, { z: zeros([2, 2]) });
 * const { z } = await loadSafetensors(`${dir}/z.safetensors`);
 * assert.deepEqual([...z!.shape], [2, 2]);
 * assert.deepEqual([...await z!.data()], [0, 0, 0, 0]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function loadSafetensors(
  path: string | URL,
  opts: LoadOptions = {},
): Promise<Record<string, Tensor>> {
  return loadSafetensorsFromBytes(
    await readBytes(path, opts, "loadSafetensors", "loadSafetensorsFromBytes"),
    String(path),
    opts,
  );
}
