/**
 * @file NumPy `.npy` (format versions 1.0/2.0/3.0) and `.npz` (a ZIP of `.npy` members)
 * read/write, so cluster centers, latents and ADM evaluation batches are real NumPy files.
 * Values are exposed as f32 (integers are exact up to 2^24).
 * @module
 */
import {
  checkDeclared,
  concatBytes,
  crc32,
  type DecodeOptions,
  FileFormatError,
  inflateLimited,
  type LoadOptions,
  maxBytesOf,
  readBytes,
  setOwn,
  viewOf,
} from "./_bytes.ts";
import { atomicWrite } from "./fs.ts";

/** The dtypes we write: f32 by default, uint8 for images (ADM `arr_0`), and a few more. */
export type NpyWriteDtype = "<f4" | "<f8" | "<i4" | "<i8" | "|u1";

/** An array to write: shape, row-major values, and optionally the dtype to store. */
export interface NpyInput {
  /** Extents of each axis. */
  shape: readonly number[];
  /** Row-major values; a `Uint8Array` defaults to `|u1`, anything else to `<f4`. */
  data: Float32Array | Uint8Array | ArrayLike<number>;
  /** Stored dtype (`<f4` unless `data` is a `Uint8Array`). */
  dtype?: NpyWriteDtype;
}

/** A decoded `.npy` array: stored dtype (e.g. `<f8`), shape and values as f32. */
export interface NpyArray {
  /** The stored NumPy dtype string (`<f4`, `|u1`, `<i8`, …). */
  dtype: string;
  /** Extents of each axis. */
  shape: number[];
  /** Row-major (C order) values converted to f32. */
  data: Float32Array;
}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // "\x93NUMPY"

function dtypeInfo(descr: string): { kind: string; size: number; little: boolean } | null {
  const m = /^([<>|=]?)([fiub])(\d+)$/.exec(descr);
  if (!m) return null;
  const kind = m[2]!, size = Number(m[3]);
  const ok = kind === "f" ? [2, 4, 8] : kind === "b" ? [1] : [1, 2, 4, 8];
  if (!ok.includes(size)) return null;
  return { kind, size, little: m[1] !== ">" };
}

function f16(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

function readValues(
  body: Uint8Array,
  info: { kind: string; size: number; little: boolean },
  n: number,
): Float32Array {
  const out = new Float32Array(n);
  const { kind, size, little } = info;
  if (kind === "f" && size === 4 && little && body.byteOffset % 4 === 0) {
    out.set(new Float32Array(body.buffer, body.byteOffset, n));
    return out;
  }
  if ((kind === "u" || kind === "b") && size === 1) {
    out.set(body.subarray(0, n));
    return out;
  }
  const dv = viewOf(body);
  for (let i = 0, o = 0; i < n; i++, o += size) {
    let v: number;
    if (kind === "f") {
      v = size === 8
        ? dv.getFloat64(o, little)
        : size === 4
        ? dv.getFloat32(o, little)
        : f16(dv.getUint16(o, little));
    } else if (kind === "i") {
      v = size === 8
        ? Number(dv.getBigInt64(o, little))
        : size === 4
        ? dv.getInt32(o, little)
        : size === 2
        ? dv.getInt16(o, little)
        : dv.getInt8(o);
    } else {
      v = size === 8
        ? Number(dv.getBigUint64(o, little))
        : size === 4
        ? dv.getUint32(o, little)
        : size === 2
        ? dv.getUint16(o, little)
        : dv.getUint8(o);
    }
    out[i] = v;
  }
  return out;
}

/**
 * Decode a `.npy` file (C order; `<f4 <f8 <f2 <i1..8 <u1..8 |b1`, either byte order).
 * Fortran-ordered, structured, string or object arrays, shapes that need more bytes than
 * the file holds, and arrays whose f32 values would exceed `opts.maxBytes` (default 2 GiB)
 * raise a {@linkcode FileFormatError} naming `name`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { decodeNpy, encodeNpy } from "../../mod.ts";
 * const a = decodeNpy(encodeNpy({ shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) }));
 * assert.equal(a.dtype, "<f4");
 * assert.deepEqual(a.shape, [2, 2]);
 * assert.deepEqual([...a.data], [1, 2, 3, 4]);
 * ```
 */
export function decodeNpy(
  bytes: Uint8Array,
  name = "<bytes>",
  opts: DecodeOptions = {},
): NpyArray {
  const maxBytes = maxBytesOf(opts);
  if (!(bytes instanceof Uint8Array)) {
    throw new TypeError(`Expected npy bytes to be a Uint8Array but found ${typeof bytes}`);
  }
  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) {
    throw new FileFormatError(name, "not a NumPy .npy file (missing \\x93NUMPY magic)");
  }
  const major = bytes[6]!;
  const dv = viewOf(bytes);
  let hlen: number, hstart: number;
  if (major === 1) {
    hlen = dv.getUint16(8, true);
    hstart = 10;
  } else if (major === 2 || major === 3) {
    if (bytes.length < 12) throw new FileFormatError(name, ".npy header truncated");
    hlen = dv.getUint32(8, true);
    hstart = 12;
  } else {
    throw new FileFormatError(name, `unsupported .npy format version ${major}.${bytes[7]}`);
  }
  if (hstart + hlen > bytes.length) {
    throw new FileFormatError(name, `.npy header length ${hlen} runs past the end of the file`);
  }
  const header = new TextDecoder(major === 3 ? "utf-8" : "latin1").decode(
    bytes.subarray(hstart, hstart + hlen),
  );
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    throw new FileFormatError(
      name,
      `.npy header is malformed or uses an unsupported (structured) dtype: ${header.trim()}`,
    );
  }
  const dims = shapeText.split(",").map((t) => t.trim());
  if (dims.length > 1 && dims[dims.length - 1] === "") dims.pop(); // "(3,)"
  if (dims.length === 1 && dims[0] === "") dims.pop(); // "()"
  if (dims.some((t) => !/^\d{1,16}L?$/.test(t))) {
    throw new FileFormatError(name, `.npy shape (${shapeText}) is not a tuple of integers`);
  }
  const shape = dims.map((t) => Number(t.replace(/L$/, "")));
  if (shape.some((d) => !Number.isSafeInteger(d))) {
    throw new FileFormatError(name, `.npy shape (${shapeText}) has an extent above 2^53`);
  }
  const info = dtypeInfo(descr);
  if (!info) {
    throw new FileFormatError(
      name,
      `unsupported .npy dtype "${descr}" (supported: float16/32/64, int8..64, uint8..64, bool)`,
    );
  }
  if (fortran === "True" && shape.length > 1) {
    throw new FileFormatError(
      name,
      `Fortran-ordered arrays are not supported (shape (${shapeText})); save with np.ascontiguousarray`,
    );
  }
  // The element count, refusing overflow: a product past 2^53 (or Infinity·0 = NaN) must
  // not turn into a silently empty array.
  let n = shape.includes(0) ? 0 : 1;
  for (const d of shape) {
    if (n === 0) break;
    n *= d;
    if (n > Number.MAX_SAFE_INTEGER) {
      throw new FileFormatError(name, `.npy shape (${shapeText}) has more than 2^53 elements`);
    }
  }
  const body = bytes.subarray(hstart + hlen);
  if (body.length < n * info.size) {
    throw new FileFormatError(
      name,
      `.npy data truncated: shape (${shapeText}) of ${descr} needs ${
        n * info.size
      } bytes but found ${body.length}`,
    );
  }
  checkDeclared(name, `.npy shape (${shapeText}) as f32`, n * 4, maxBytes);
  return { dtype: descr, shape, data: readValues(body, info, n) };
}

/**
 * Encode an array as a `.npy` file (version 1.0, or 2.0 when the header needs it).
 * Stores `<f4` by default and `|u1` for `Uint8Array` data; integer dtypes require
 * integer values in range.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { encodeNpy } from "../../mod.ts";
 * const img = encodeNpy({ shape: [1, 2, 2, 3], data: new Uint8Array(12).fill(255) });
 * // NPY magic "\x93NUMPY", version 1.0; the header is padded so the data starts at a
 * // multiple of 64 bytes, then the 12 data bytes.
 * assert.deepEqual([...img.subarray(0, 8)], [0x93, 78, 85, 77, 80, 89, 1, 0]);
 * assert.equal((img.length - 12) % 64, 0);
 * assert.deepEqual([...img.subarray(img.length - 12)], new Array(12).fill(255));
 * ```
 */
export function encodeNpy(arr: NpyInput, name = "array"): Uint8Array {
  if (!arr || !Array.isArray(arr.shape) || arr.data === undefined) {
    throw new TypeError(`Expected ${name} to be {shape: number[], data}`);
  }
  const dtype = arr.dtype ?? (arr.data instanceof Uint8Array ? "|u1" : "<f4");
  const info = dtypeInfo(dtype);
  if (!info || !["<f4", "<f8", "<i4", "<i8", "|u1"].includes(dtype)) {
    throw new RangeError(
      `Expected ${name} dtype to be one of "<f4", "<f8", "<i4", "<i8", "|u1" but found "${dtype}"`,
    );
  }
  const shape = arr.shape;
  if (shape.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new RangeError(`Expected ${name} shape to be non-negative integers but found [${shape}]`);
  }
  const n = shape.reduce((a, b) => a * b, 1);
  if (arr.data.length !== n) {
    throw new RangeError(
      `Expected ${name} to have ${n} values for shape [${
        shape.join(", ")
      }] but found ${arr.data.length}`,
    );
  }
  const shapeStr = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(", ")})`;
  let header = `{'descr': '${dtype}', 'fortran_order': False, 'shape': ${shapeStr}, }`;
  // NumPy pads the header with spaces and a newline so data starts 64-byte aligned.
  let version = 1, pre = 10;
  if (header.length + 1 + pre > 0xffff) version = 2, pre = 12;
  const total = Math.ceil((pre + header.length + 1) / 64) * 64;
  header = header + " ".repeat(total - pre - header.length - 1) + "\n";
  const out = new Uint8Array(total + n * info.size);
  out.set(MAGIC);
  out[6] = version;
  out[7] = 0;
  const dv = viewOf(out);
  if (version === 1) dv.setUint16(8, header.length, true);
  else dv.setUint32(8, header.length, true);
  for (let i = 0; i < header.length; i++) out[pre + i] = header.charCodeAt(i);
  const src = arr.data;
  if (info.kind === "f") {
    for (let i = 0, o = total; i < n; i++, o += info.size) {
      if (info.size === 4) dv.setFloat32(o, src[i]!, true);
      else dv.setFloat64(o, src[i]!, true);
    }
  } else {
    const [lo, hi] = dtype === "|u1"
      ? [0, 255]
      : dtype === "<i4"
      ? [-(2 ** 31), 2 ** 31 - 1]
      : [-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER];
    for (let i = 0, o = total; i < n; i++, o += info.size) {
      const v = src[i]!;
      if (!Number.isInteger(v) || v < lo || v > hi) {
        throw new RangeError(
          `Expected ${name} values to be integers in [${lo}, ${hi}] for dtype "${dtype}" but found ${v} at index ${i}`,
        );
      }
      if (info.size === 1) out[o] = v;
      else if (info.size === 4) dv.setInt32(o, v, true);
      else dv.setBigInt64(o, BigInt(v), true);
    }
  }
  return out;
}

// ---- ZIP (npz) ----

const SIG_LOCAL = 0x04034b50, SIG_CENTRAL = 0x02014b50, SIG_EOCD = 0x06054b50;
const SIG_Z64_EOCD = 0x06064b50, SIG_Z64_LOC = 0x07064b50;

/**
 * Encode named arrays as an `.npz` (stored ZIP entries `<name>.npy`, like `np.savez`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { decodeNpz, encodeNpz } from "../../mod.ts";
 * const z = encodeNpz({ arr_0: { shape: [3], data: new Float32Array([1, 2, 3]) } });
 * assert.deepEqual([...z.subarray(0, 4)], [0x50, 0x4b, 3, 4]); // a ZIP local file header
 * const back = await decodeNpz(z);
 * assert.deepEqual([...back.arr_0!.data], [1, 2, 3]);
 * ```
 */
export function encodeNpz(arrays: Record<string, NpyInput>): Uint8Array {
  const enc = new TextEncoder();
  const locals: Uint8Array[] = [], centrals: Uint8Array[] = [];
  let offset = 0;
  for (const [key, arr] of Object.entries(arrays)) {
    const data = encodeNpy(arr, `array "${key}"`);
    const fname = enc.encode(`${key}.npy`);
    const crc = crc32(data);
    if (offset + data.length > 0xfffffffe) {
      throw new RangeError(`Cannot write .npz larger than 4 GB (array "${key}")`);
    }
    const lh = new Uint8Array(30 + fname.length);
    const l = viewOf(lh);
    l.setUint32(0, SIG_LOCAL, true);
    l.setUint16(4, 20, true); // version needed: 2.0
    l.setUint16(8, 0, true); // method: stored
    l.setUint16(12, 0x21, true); // DOS date 1980-01-01: deterministic output
    l.setUint32(14, crc, true);
    l.setUint32(18, data.length, true);
    l.setUint32(22, data.length, true);
    l.setUint16(26, fname.length, true);
    lh.set(fname, 30);
    const ch = new Uint8Array(46 + fname.length);
    const c = viewOf(ch);
    c.setUint32(0, SIG_CENTRAL, true);
    c.setUint16(4, 20, true);
    c.setUint16(6, 20, true);
    c.setUint16(14, 0x21, true);
    c.setUint32(16, crc, true);
    c.setUint32(20, data.length, true);
    c.setUint32(24, data.length, true);
    c.setUint16(28, fname.length, true);
    c.setUint32(42, offset, true);
    ch.set(fname, 46);
    locals.push(lh, data);
    centrals.push(ch);
    offset += lh.length + data.length;
  }
  const cd = concatBytes(centrals);
  const eocd = new Uint8Array(22);
  const e = viewOf(eocd);
  e.setUint32(0, SIG_EOCD, true);
  e.setUint16(8, centrals.length, true);
  e.setUint16(10, centrals.length, true);
  e.setUint32(12, cd.length, true);
  e.setUint32(16, offset, true);
  return concatBytes([...locals, cd, eocd]);
}

/**
 * Decode an `.npz` (stored entries from `np.savez`, deflated ones from
 * `np.savez_compressed`, Zip64 records) into arrays keyed by name without `.npy`.
 * CRCs are checked; every structural problem (records or extra fields past the end,
 * sizes the data cannot hold, deflate data inflating past its declared size, arrays above
 * `opts.maxBytes` in total) raises a {@linkcode FileFormatError} naming `name`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { decodeNpz, encodeNpz } from "../../mod.ts";
 * const z = encodeNpz({ labels: { shape: [2], data: new Float32Array([3, 7]), dtype: "<i8" } });
 * const { labels } = await decodeNpz(z);
 * assert.equal(labels!.dtype, "<i8");
 * assert.deepEqual([...labels!.data], [3, 7]);
 * ```
 */
export async function decodeNpz(
  bytes: Uint8Array,
  name = "<bytes>",
  opts: DecodeOptions = {},
): Promise<Record<string, NpyArray>> {
  if (!(bytes instanceof Uint8Array)) {
    throw new TypeError(`Expected npz bytes to be a Uint8Array but found ${typeof bytes}`);
  }
  const maxBytes = maxBytesOf(opts);
  const dv = viewOf(bytes);
  let eocd = -1;
  for (let i = bytes.length - 22; i >= Math.max(0, bytes.length - 22 - 0xffff); i--) {
    if (dv.getUint32(i, true) === SIG_EOCD) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) {
    throw new FileFormatError(
      name,
      "not a ZIP/.npz file (no end-of-central-directory record; truncated?)",
    );
  }
  let count = dv.getUint16(eocd + 10, true);
  let cdOff = dv.getUint32(eocd + 16, true);
  if (
    (count === 0xffff || cdOff === 0xffffffff) && eocd >= 20 &&
    dv.getUint32(eocd - 20, true) === SIG_Z64_LOC
  ) {
    const z = Number(dv.getBigUint64(eocd - 12, true));
    if (z + 56 > bytes.length || dv.getUint32(z, true) !== SIG_Z64_EOCD) {
      throw new FileFormatError(name, "bad Zip64 end-of-central-directory record");
    }
    count = Number(dv.getBigUint64(z + 32, true));
    cdOff = Number(dv.getBigUint64(z + 48, true));
  }
  const out: Record<string, NpyArray> = {};
  let p = cdOff, budget = maxBytes;
  for (let k = 0; k < count; k++) {
    if (p + 46 > bytes.length || dv.getUint32(p, true) !== SIG_CENTRAL) {
      throw new FileFormatError(name, `corrupt ZIP central directory at entry ${k}`);
    }
    const method = dv.getUint16(p + 10, true);
    const crc = dv.getUint32(p + 16, true);
    let csize = dv.getUint32(p + 20, true);
    let usize = dv.getUint32(p + 24, true);
    const nlen = dv.getUint16(p + 28, true), xlen = dv.getUint16(p + 30, true);
    const clen = dv.getUint16(p + 32, true);
    let lho = dv.getUint32(p + 42, true);
    const end = p + 46 + nlen + xlen + clen;
    if (end > bytes.length) {
      throw new FileFormatError(
        name,
        `ZIP central directory entry ${k} runs past the end of the file (truncated?)`,
      );
    }
    const fname = new TextDecoder().decode(bytes.subarray(p + 46, p + 46 + nlen));
    // Zip64 extra field: the 8-byte values appear only for fields saturated at 0xFFFFFFFF,
    // in this order, and must fit inside the field.
    const xend = p + 46 + nlen + xlen;
    for (let x = p + 46 + nlen; x + 4 <= xend;) {
      const id = dv.getUint16(x, true), sz = dv.getUint16(x + 2, true);
      if (x + 4 + sz > xend) {
        throw new FileFormatError(name, `entry "${fname}": extra field runs past its record`);
      }
      if (id === 1) {
        let q = x + 4;
        const next = (): number => {
          if (q + 8 > x + 4 + sz) {
            throw new FileFormatError(name, `entry "${fname}": Zip64 extra field too short`);
          }
          const v = Number(dv.getBigUint64(q, true));
          q += 8;
          return v;
        };
        if (usize === 0xffffffff) usize = next();
        if (csize === 0xffffffff) csize = next();
        if (lho === 0xffffffff) lho = next();
      }
      x += 4 + sz;
    }
    p = end;
    if (lho + 30 > bytes.length || dv.getUint32(lho, true) !== SIG_LOCAL) {
      throw new FileFormatError(name, `entry "${fname}": bad local header offset`);
    }
    const start = lho + 30 + dv.getUint16(lho + 26, true) + dv.getUint16(lho + 28, true);
    if (start + csize > bytes.length) {
      throw new FileFormatError(name, `entry "${fname}": data runs past the end (truncated?)`);
    }
    let data = bytes.subarray(start, start + csize);
    if (method === 8) {
      checkDeclared(name, `entry "${fname}"`, usize, budget, csize);
      data = await inflateLimited(data, "deflate-raw", usize, name, `entry "${fname}"`);
    } else if (method !== 0) {
      throw new FileFormatError(
        name,
        `entry "${fname}": unsupported ZIP compression method ${method}`,
      );
    }
    if (data.length !== usize || crc32(data) !== crc) {
      throw new FileFormatError(name, `entry "${fname}": CRC or size mismatch (file corrupted)`);
    }
    const key = fname.endsWith(".npy") ? fname.slice(0, -4) : fname;
    const arr = decodeNpy(data, `${name}[${fname}]`, { maxBytes: budget });
    budget = Math.max(0, budget - arr.data.byteLength);
    setOwn(out, key, arr);
  }
  return out;
}

/**
 * Write one array to a `.npy` file atomically.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { loadNpy, saveNpy } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * await saveNpy(`${dir}/c.npy`, { shape: [2], data: new Float32Array([1, 2]) });
 * assert.deepEqual([...(await loadNpy(`${dir}/c.npy`)).data], [1, 2]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function saveNpy(path: string, arr: NpyInput): Promise<void> {
  await atomicWrite(path, encodeNpy(arr));
}

/**
 * Read a `.npy` file (path or URL; a URL fetch times out after `opts.timeoutMs`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { loadNpy, saveNpy } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * await saveNpy(`${dir}/u.npy`, { shape: [3], data: new Uint8Array([0, 128, 255]) });
 * const a = await loadNpy(`${dir}/u.npy`);
 * assert.equal(a.dtype, "|u1");
 * assert.deepEqual([...a.data], [0, 128, 255]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function loadNpy(path: string | URL, opts: LoadOptions = {}): Promise<NpyArray> {
  return decodeNpy(await readBytes(path, opts, "loadNpy", "decodeNpy"), String(path), opts);
}

/**
 * Write named arrays to an `.npz` file atomically (stored entries, like `np.savez`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { loadNpz, saveNpz } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * await saveNpz(`${dir}/s.npz`, { arr_0: { shape: [1, 1, 1, 3], data: new Uint8Array([1, 2, 3]) } });
 * const { arr_0 } = await loadNpz(`${dir}/s.npz`);
 * assert.equal(arr_0!.dtype, "|u1");
 * assert.deepEqual(arr_0!.shape, [1, 1, 1, 3]);
 * assert.deepEqual([...arr_0!.data], [1, 2, 3]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function saveNpz(path: string, arrays: Record<string, NpyInput>): Promise<void> {
  await atomicWrite(path, encodeNpz(arrays));
}

/**
 * Read an `.npz` file (path or URL), stored or deflated; `opts` caps the decoded size and
 * the time a URL fetch may take.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { loadNpz, saveNpz } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * await saveNpz(`${dir}/a.npz`, { a: { shape: [2], data: new Float32Array([4, 5]) } });
 * assert.deepEqual([...(await loadNpz(`${dir}/a.npz`)).a!.data], [4, 5]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function loadNpz(
  path: string | URL,
  opts: LoadOptions = {},
): Promise<Record<string, NpyArray>> {
  return await decodeNpz(
    await readBytes(path, opts, "loadNpz", "decodeNpz"),
    String(path),
    opts,
  );
}
