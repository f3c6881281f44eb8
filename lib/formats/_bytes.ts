/**
 * @file Byte-level helpers shared by the file formats: CRC-32, zlib/deflate through the
 * web-standard compression streams, little-endian integer access and the typed error
 * every reader raises.
 * @module
 */
import { denoApi } from "../_util.ts";

let crcTable: Uint32Array | undefined;

function table(): Uint32Array {
  if (crcTable) return crcTable;
  // Reflected CRC-32 (polynomial 0xEDB88320), the one PNG, ZIP and gzip share.
  crcTable = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    crcTable[n] = c >>> 0;
  }
  return crcTable;
}

/**
 * CRC-32 of `bytes` (the checksum of PNG chunks, ZIP entries and checkpoints). Pass a
 * previous result as `crc` to continue over several pieces.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { crc32 } from "./_bytes.ts";
 * // The CRC-32 check value of "123456789" (ISO-HDLC, as zlib and PNG use it).
 * assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
 * assert.equal(crc32(new Uint8Array(0)), 0);
 * ```
 */
export function crc32(bytes: Uint8Array, crc = 0): number {
  const t = table();
  let c = (crc ^ 0xffffffff) >>> 0;
  for (let i = 0; i < bytes.length; i++) c = t[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * A file (or byte buffer) that does not follow its format. `file` names the source
 * (a path, a URL or `"<bytes>"`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FileFormatError } from "../../mod.ts";
 * const e = new FileFormatError("a.npy", "not a NumPy file");
 * assert.ok(e instanceof RangeError);
 * assert.ok(e.message.includes("a.npy") && e.message.includes("not a NumPy file"));
 * ```
 */
export class FileFormatError extends RangeError {
  /** The file (or `"<bytes>"`) the error is about. */
  readonly file: string;
  /** Create an error whose message starts with the file name. */
  constructor(file: string, message: string) {
    super(`${file}: ${message}`);
    this.name = "FileFormatError";
    this.file = file;
  }
}

/**
 * A file is not of the kind expected: a wrong magic number, or a compressed stream that
 * cannot be decompressed. `file` names the source (a path, a URL or `"<bytes>"`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FileTypeError } from "../../mod.ts";
 * const e = new FileTypeError("a.gz", "not gzip data");
 * assert.ok(e instanceof TypeError);
 * assert.equal(e.file, "a.gz");
 * assert.equal(e.name, "FileTypeError");
 * ```
 */
export class FileTypeError extends TypeError {
  /** The file (or `"<bytes>"`) the error is about. */
  readonly file: string;
  /** Create an error whose message starts with the file name. */
  constructor(file: string, message: string) {
    super(`${file}: ${message}`);
    this.name = "FileTypeError";
    this.file = file;
  }
}

/**
 * Fetching a URL failed: the host did not answer within the timeout, or the connection
 * failed. `file` is the URL. (An HTTP error status is a {@linkcode FileFormatError}.)
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FetchError } from "../../mod.ts";
 * const e = new FetchError("https://example.com/w.safetensors", "no response within 10 ms");
 * assert.ok(e instanceof TypeError);
 * assert.ok(e.message.startsWith("https://example.com/w.safetensors"));
 * ```
 */
export class FetchError extends TypeError {
  /** The URL that could not be fetched. */
  readonly file: string;
  /** Create an error whose message starts with the URL. */
  constructor(url: string, message: string) {
    super(`${url}: ${message}`);
    this.name = "FetchError";
    this.file = url;
  }
}

/**
 * Largest decoded size a file may declare unless a reader is given `maxBytes`: 2 GiB.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { DEFAULT_MAX_BYTES } from "../../mod.ts";
 * assert.equal(DEFAULT_MAX_BYTES, 2 ** 31); // 2 GiB
 * ```
 */
export const DEFAULT_MAX_BYTES: number = 2 ** 31;

/**
 * How long a URL fetch may take (connection and body) unless `timeoutMs` is given: 60 s.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { DEFAULT_FETCH_TIMEOUT_MS } from "../../mod.ts";
 * assert.equal(DEFAULT_FETCH_TIMEOUT_MS, 60 * 1000); // one minute
 * ```
 */
export const DEFAULT_FETCH_TIMEOUT_MS = 60_000;

/**
 * Limits of the file decoders. A file that declares a decoded size above `maxBytes`, or
 * larger than the bytes present could hold (deflate expands at most 1032:1), is refused
 * with a {@linkcode FileFormatError} before anything that size is allocated.
 */
export interface DecodeOptions {
  /** Largest decoded size in bytes a file may declare (default {@linkcode DEFAULT_MAX_BYTES}). */
  maxBytes?: number;
}

/** Options of the loaders that accept URLs: decode limits plus a fetch timeout. */
export interface LoadOptions extends DecodeOptions {
  /**
   * Milliseconds an `http(s)://` fetch may take, body included (default
   * {@linkcode DEFAULT_FETCH_TIMEOUT_MS}); past it a {@linkcode FetchError} names the URL.
   */
  timeoutMs?: number;
}

/** @internal Deflate's largest expansion ratio (a run of one byte: 258 bytes per 2 bits). */
export const MAX_DEFLATE_RATIO = 1032;

/** @internal The `maxBytes` option, validated (`RangeError` naming the option). */
export function maxBytesOf(opts: DecodeOptions | undefined): number {
  const m = opts?.maxBytes ?? DEFAULT_MAX_BYTES;
  if (typeof m !== "number" || !(m >= 0) || !Number.isSafeInteger(m)) {
    throw new RangeError(`Expected maxBytes to be an integer >= 0 but found ${m}`);
  }
  return m;
}

/**
 * @internal Refuse a declared decoded size above the cap, or one that `compressed` bytes of
 * deflate data cannot hold. `what` describes the quantity (e.g. "PNG 9000×9000 RGB").
 */
export function checkDeclared(
  file: string,
  what: string,
  declared: number,
  maxBytes: number,
  compressed?: number,
): void {
  if (!Number.isFinite(declared) || declared > maxBytes) {
    throw new FileFormatError(
      file,
      `${what} declares ${declared} bytes, above the limit of ${maxBytes} (pass a larger maxBytes to read it)`,
    );
  }
  if (compressed !== undefined && declared > compressed * MAX_DEFLATE_RATIO + 64) {
    throw new FileFormatError(
      file,
      `${what} declares ${declared} bytes but ${compressed} compressed bytes can hold at most ${
        compressed * MAX_DEFLATE_RATIO + 64
      } (file corrupted)`,
    );
  }
}

/**
 * @internal Define an own enumerable property (a key such as `"__proto__"` from a file must
 * become a plain entry, not change the object's prototype).
 */
export function setOwn<T>(obj: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

const INFLATE_CHUNK = 8192;

/**
 * @internal A streaming decompressor for untrusted input: it feeds the compressed bytes in
 * 8 KiB pieces (so one piece inflates to at most ~8 MiB) and hands out only as many bytes as
 * asked for, so a reader stops at the size a file declares instead of inflating a bomb.
 * Corrupt data raises the error made by `corrupt`.
 */
export class Inflater {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #done = false;
  #corrupt: (message: string) => Error;
  #pump: Promise<void>;

  /** Decompress `input` (bytes or a byte stream, e.g. a file's `readable`). */
  constructor(
    input: Uint8Array | ReadableStream<Uint8Array>,
    format: "deflate" | "deflate-raw" | "gzip",
    corrupt: (message: string) => Error,
  ) {
    this.#corrupt = corrupt;
    const ds = new DecompressionStream(format);
    const writer = ds.writable.getWriter();
    this.#reader = ds.readable.getReader();
    const feed = async (bytes: Uint8Array) => {
      for (let o = 0; o < bytes.length; o += INFLATE_CHUNK) {
        await writer.write(bytes.subarray(o, o + INFLATE_CHUNK) as Uint8Array<ArrayBuffer>);
      }
    };
    const src = input instanceof Uint8Array ? null : input.getReader();
    this.#pump = (async () => {
      try {
        if (!src) await feed(input as Uint8Array);
        else {
          for (;;) {
            const { done, value } = await src.read();
            if (done) break;
            await feed(value);
          }
        }
        await writer.close();
      } catch (e) {
        await writer.abort(e).catch(() => {});
        await src?.cancel(e).catch(() => {});
      }
    })();
  }

  /** Up to `n` more bytes: fewer only when the stream ends first. */
  async read(n: number): Promise<Uint8Array> {
    while (this.#pendingBytes < n && !this.#done) {
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await this.#reader.read();
      } catch (e) {
        this.#done = true;
        throw this.#corrupt((e as Error)?.message ?? String(e));
      }
      if (r.done) this.#done = true;
      else if (r.value.length) {
        this.#pending.push(r.value);
        this.#pendingBytes += r.value.length;
      }
    }
    const take = Math.min(n, this.#pendingBytes);
    const out = new Uint8Array(take);
    let o = 0;
    while (o < take) {
      const c = this.#pending[0]!;
      const k = Math.min(c.length, take - o);
      out.set(c.subarray(0, k), o);
      o += k;
      if (k === c.length) this.#pending.shift();
      else this.#pending[0] = c.subarray(k);
    }
    this.#pendingBytes -= take;
    return out;
  }

  /** Whether the decompressed stream has ended (reads ahead at most one piece). */
  async atEnd(): Promise<boolean> {
    if (this.#pendingBytes > 0) return false;
    await this.read(1).then((b) => {
      if (b.length) {
        this.#pending.unshift(b);
        this.#pendingBytes += b.length;
      }
    });
    return this.#pendingBytes === 0;
  }

  /** Stop decompressing and release the input. */
  async close(): Promise<void> {
    this.#done = true;
    this.#pending = [];
    this.#pendingBytes = 0;
    await this.#reader.cancel().catch(() => {});
    await this.#pump; // the input is released (a file closed) before close() returns
  }
}

/**
 * @internal Decompress all of `bytes`, refusing output past `limit` bytes; `what` names the
 * data in errors (e.g. `PNG image data`).
 */
export async function inflateLimited(
  bytes: Uint8Array,
  format: "deflate" | "deflate-raw" | "gzip",
  limit: number,
  file: string,
  what: string,
): Promise<Uint8Array> {
  const inf = new Inflater(
    bytes,
    format,
    (m) => new FileFormatError(file, `${what} is corrupt (${m})`),
  );
  try {
    const out = await inf.read(limit);
    if (!(await inf.atEnd())) {
      throw new FileFormatError(
        file,
        `${what} inflates to more than the ${limit} bytes declared (file corrupted)`,
      );
    }
    return out;
  } finally {
    await inf.close();
  }
}

/** @internal Fetch a URL with a timeout covering the body; errors name the URL. */
export async function fetchBytes(url: string, opts: LoadOptions = {}): Promise<Uint8Array> {
  const ms = opts.timeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS;
  if (typeof ms !== "number" || !(ms > 0)) {
    throw new RangeError(`Expected timeoutMs to be a number > 0 but found ${ms}`);
  }
  const maxBytes = maxBytesOf(opts);
  const signal = AbortSignal.timeout(ms);
  const fail = (e: unknown): Error => {
    if (e instanceof FileFormatError) return e;
    const err = e as Error;
    if (signal.aborted || err?.name === "TimeoutError" || err?.name === "AbortError") {
      return new FetchError(
        url,
        `no complete response within ${ms} ms (the host did not answer; raise timeoutMs to wait longer)`,
      );
    }
    return new FetchError(url, `fetch failed: ${err?.message ?? String(e)}`);
  };
  let res: Response;
  try {
    res = await fetch(url, { signal });
  } catch (e) {
    throw fail(e);
  }
  if (!res.ok) {
    await res.body?.cancel().catch(() => {});
    throw new FileFormatError(url, `HTTP ${res.status} ${res.statusText}`);
  }
  const declared = Number(res.headers.get("content-length") ?? NaN);
  if (declared > maxBytes) {
    await res.body?.cancel().catch(() => {});
    checkDeclared(url, "the response", declared, maxBytes);
  }
  const parts: Uint8Array[] = [];
  let got = 0;
  const reader = res.body?.getReader();
  try {
    while (reader) {
      const { done, value } = await reader.read();
      if (done) break;
      got += value.length;
      if (got > maxBytes) checkDeclared(url, "the response", got, maxBytes);
      parts.push(value);
    }
  } catch (e) {
    await reader?.cancel().catch(() => {});
    throw fail(e);
  }
  return concatBytes(parts);
}

/**
 * @internal Compress with a web-standard `CompressionStream` format. The bytes are written
 * to the stream in pieces (not through a `Blob`, whose native copy V8's collector does not
 * see, so repeated large compressions grew the RSS by their size each time).
 */
export async function compress(
  bytes: Uint8Array,
  format: "deflate" | "deflate-raw" | "gzip",
): Promise<Uint8Array> {
  const cs = new CompressionStream(format);
  const writer = cs.writable.getWriter();
  const out = new Response(cs.readable).arrayBuffer();
  for (let o = 0; o < bytes.length; o += 1 << 16) {
    await writer.write(bytes.subarray(o, o + (1 << 16)) as Uint8Array<ArrayBuffer>);
  }
  await writer.close();
  return new Uint8Array(await out);
}

/** @internal Concatenate byte arrays. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** @internal A DataView over exactly `bytes`. */
export function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** @internal Whether a string is an http(s) URL (loaders then use `fetch`). */
export function isHttpUrl(path: string | URL): boolean {
  const s = String(path);
  return s.startsWith("http://") || s.startsWith("https://");
}

/**
 * @internal Read a file path, `file:` URL or http(s) URL into bytes. `caller` and `decoder`
 * name the public function and its bytes-taking twin for the error a browser gets.
 */
export async function readBytes(
  path: string | URL,
  opts: LoadOptions = {},
  caller = "readBytes",
  decoder = "the matching decode function",
): Promise<Uint8Array> {
  if (isHttpUrl(path)) return await fetchBytes(String(path), opts);
  const fs = denoApi(`${caller}(${JSON.stringify(String(path))})`, `pass bytes to ${decoder}`);
  return await fs.readFile(
    typeof path === "string" && path.startsWith("file:") ? new URL(path) : path,
  );
}
