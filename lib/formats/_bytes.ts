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
 * import { crc32 } from "./_bytes.ts";
 * const c = crc32(new TextEncoder().encode("123456789"));
 * if (c !== 0xcbf43926) throw new Error("bad crc");
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
 * import { FileFormatError } from "../../mod.ts";
 * const e = new FileFormatError("a.npy", "not a NumPy file");
 * if (!(e instanceof RangeError) || !e.message.includes("a.npy")) throw new Error("bad");
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

/** @internal Compress with a web-standard `CompressionStream` format. */
export async function compress(
  bytes: Uint8Array,
  format: "deflate" | "deflate-raw" | "gzip",
): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new CompressionStream(format),
  );
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** @internal Decompress with a web-standard `DecompressionStream` format. */
export async function decompress(
  bytes: Uint8Array,
  format: "deflate" | "deflate-raw" | "gzip",
): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new DecompressionStream(format),
  );
  return new Uint8Array(await new Response(stream).arrayBuffer());
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
  caller = "readBytes",
  decoder = "the matching decode function",
): Promise<Uint8Array> {
  if (isHttpUrl(path)) {
    const res = await fetch(String(path));
    if (!res.ok) {
      await res.body?.cancel();
      throw new FileFormatError(String(path), `HTTP ${res.status} ${res.statusText}`);
    }
    return new Uint8Array(await res.arrayBuffer());
  }
  const fs = denoApi(`${caller}(${JSON.stringify(String(path))})`, `pass bytes to ${decoder}`);
  return await fs.readFile(
    typeof path === "string" && path.startsWith("file:") ? new URL(path) : path,
  );
}
