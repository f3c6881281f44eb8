/**
 * @file Animated GIF encoder (GIF89a, one global 256-colour palette, LZW) for field and
 * sample animations, with no native dependencies.
 * @module
 */
import { checkInt } from "../lib/_util.ts";
import type { RgbaImage } from "../lib/formats/png.ts";

/** Options of {@linkcode encodeGif}. */
export interface GifOptions {
  /** Delay between frames in milliseconds (default 100; GIF stores hundredths). */
  delayMs?: number;
  /** Number of repetitions, 0 = forever (default 0). */
  loop?: number;
}

/**
 * Build a global palette of at most 256 colours: the most frequent colours after
 * reducing to 5 bits per channel (plots have few distinct colours, so this is exact for
 * them), and a lookup from every 15-bit colour to its nearest palette entry.
 */
function buildPalette(frames: readonly RgbaImage[]): { palette: Uint8Array; lut: Uint8Array } {
  const counts = new Uint32Array(32768);
  for (const f of frames) {
    const d = f.rgba;
    for (let i = 0; i < d.length; i += 4) {
      counts[((d[i]! >> 3) << 10) | ((d[i + 1]! >> 3) << 5) | (d[i + 2]! >> 3)]!++;
    }
  }
  const used: number[] = [];
  for (let k = 0; k < 32768; k++) if (counts[k]) used.push(k);
  used.sort((a, b) => counts[b]! - counts[a]!);
  const chosen = used.slice(0, 256);
  const palette = new Uint8Array(256 * 3);
  const expand = (v: number) => (v << 3) | (v >> 2);
  chosen.forEach((k, i) => {
    palette[3 * i] = expand(k >> 10);
    palette[3 * i + 1] = expand((k >> 5) & 31);
    palette[3 * i + 2] = expand(k & 31);
  });
  const lut = new Uint8Array(32768);
  const direct = new Int16Array(32768).fill(-1);
  chosen.forEach((k, i) => direct[k] = i);
  for (const k of used) {
    if (direct[k]! >= 0) {
      lut[k] = direct[k]!;
      continue;
    }
    let best = 0, bestD = Infinity;
    const r = k >> 10, g = (k >> 5) & 31, b = k & 31;
    for (let i = 0; i < chosen.length; i++) {
      const c = chosen[i]!;
      const dr = r - (c >> 10), dg = g - ((c >> 5) & 31), db = b - (c & 31);
      const dd = 2 * dr * dr + 4 * dg * dg + db * db;
      if (dd < bestD) bestD = dd, best = i;
    }
    lut[k] = best;
  }
  return { palette, lut };
}

/** LZW-compress palette indices with 8-bit minimum code size, packed into sub-blocks. */
function lzw(indices: Uint8Array): Uint8Array {
  const minCode = 8, clear = 1 << minCode, eoi = clear + 1;
  const out: number[] = [];
  let bitBuf = 0, bitCount = 0;
  let codeSize = minCode + 1;
  const emit = (code: number) => {
    bitBuf |= code << bitCount;
    bitCount += codeSize;
    while (bitCount >= 8) {
      out.push(bitBuf & 0xff);
      bitBuf >>>= 8;
      bitCount -= 8;
    }
  };
  let dict = new Map<number, number>();
  let next = eoi + 1;
  emit(clear);
  let prefix = indices[0]!;
  for (let i = 1; i < indices.length; i++) {
    const k = indices[i]!;
    const key = prefix * 256 + k;
    const hit = dict.get(key);
    if (hit !== undefined) {
      prefix = hit;
      continue;
    }
    emit(prefix);
    if (next < 4096) {
      dict.set(key, next++);
      // The decoder widens its codes one step after the table reaches the next power
      // of two, so widen when `next` passes 2^codeSize.
      if (next > (1 << codeSize) && codeSize < 12) codeSize++;
    } else {
      emit(clear);
      dict = new Map();
      next = eoi + 1;
      codeSize = minCode + 1;
    }
    prefix = k;
  }
  emit(prefix);
  emit(eoi);
  if (bitCount > 0) out.push(bitBuf & 0xff);
  const blocks: number[] = [minCode];
  for (let i = 0; i < out.length; i += 255) {
    const n = Math.min(255, out.length - i);
    blocks.push(n);
    for (let j = 0; j < n; j++) blocks.push(out[i + j]!);
  }
  blocks.push(0);
  return new Uint8Array(blocks);
}

/**
 * Encode RGBA frames (all the same size) as an animated GIF with one global palette.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { encodeGif } from "./mod.ts";
 * const frame = (v: number) => ({ width: 2, height: 2, rgba: new Uint8Array(16).fill(v) });
 * const gif = encodeGif([frame(0), frame(255)], { delayMs: 200 });
 * assert.equal(new TextDecoder().decode(gif.subarray(0, 6)), "GIF89a");
 * assert.deepEqual([...gif.subarray(6, 10)], [2, 0, 2, 0]); // logical screen 2×2, little-endian
 * assert.equal(gif[gif.length - 1], 0x3b); // trailer
 * ```
 */
export function encodeGif(frames: readonly RgbaImage[], opts: GifOptions = {}): Uint8Array {
  if (!frames || frames.length === 0) {
    throw new RangeError("Expected GIF frames to be a non-empty array");
  }
  const { width, height } = frames[0]!;
  checkInt("GIF width", width, 1, 65535);
  checkInt("GIF height", height, 1, 65535);
  frames.forEach((f, i) => {
    if (f.width !== width || f.height !== height || f.rgba.length !== width * height * 4) {
      throw new RangeError(
        `Expected GIF frame ${i} to be ${width}x${height} RGBA like frame 0 but found ${f.width}x${f.height} (${f.rgba.length} bytes)`,
      );
    }
  });
  const delay = Math.round(checkInt("GIF delayMs", Math.round(opts.delayMs ?? 100), 0) / 10);
  const loop = checkInt("GIF loop", opts.loop ?? 0, 0, 65535);
  const { palette, lut } = buildPalette(frames);
  const parts: number[] = [];
  const u16 = (v: number) => parts.push(v & 0xff, v >> 8);
  for (const c of "GIF89a") parts.push(c.charCodeAt(0));
  u16(width);
  u16(height);
  parts.push(0xf7, 0, 0); // global colour table of 2^(7+1) entries
  for (const v of palette) parts.push(v);
  // NETSCAPE2.0 application extension: loop count.
  parts.push(0x21, 0xff, 11);
  for (const c of "NETSCAPE2.0") parts.push(c.charCodeAt(0));
  parts.push(3, 1);
  u16(loop);
  parts.push(0);
  const chunks: Uint8Array[] = [new Uint8Array(parts)];
  for (const f of frames) {
    const idx = new Uint8Array(width * height);
    const d = f.rgba;
    for (let i = 0, j = 0; i < idx.length; i++, j += 4) {
      idx[i] = lut[((d[j]! >> 3) << 10) | ((d[j + 1]! >> 3) << 5) | (d[j + 2]! >> 3)]!;
    }
    const head = [0x21, 0xf9, 4, 0x04, delay & 0xff, delay >> 8, 0, 0]; // GCE: keep frame
    head.push(0x2c, 0, 0, 0, 0, width & 0xff, width >> 8, height & 0xff, height >> 8, 0);
    chunks.push(new Uint8Array(head), lzw(idx));
  }
  chunks.push(new Uint8Array([0x3b]));
  let n = 0;
  for (const c of chunks) n += c.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const c of chunks) out.set(c, o), o += c.length;
  return out;
}
