/**
 * @file PNG encode/decode with no native dependencies: zlib through the web-standard
 * `CompressionStream("deflate")`, CRC-32 per chunk. Decoding covers 8-bit gray,
 * gray+alpha, RGB, RGBA and palette images, non-interlaced (what image folders hold).
 * @module
 */
import { checkInt } from "../_util.ts";
import {
  checkDeclared,
  compress,
  concatBytes,
  crc32,
  type DecodeOptions,
  FileFormatError,
  inflateLimited,
  maxBytesOf,
  viewOf,
} from "./_bytes.ts";

/** An 8-bit image: `channels` interleaved values per pixel, rows top to bottom. */
export interface RawImage {
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA). */
  channels: 1 | 2 | 3 | 4;
  /** `width * height * channels` bytes. */
  data: Uint8Array;
}

/** An RGBA image (what the plotting kit and {@linkcode imageGrid} produce). */
export interface RgbaImage {
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** `width * height * 4` bytes. */
  rgba: Uint8Array;
}

const SIGNATURE = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);
const COLOR_TYPE: Record<number, number> = { 1: 0, 2: 4, 3: 2, 4: 6 };

function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const dv = viewOf(out);
  dv.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  dv.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

/**
 * Encode 8-bit pixels as a PNG. `pixels` holds `channels` (default 4) values per pixel.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { decodePng, encodePng } from "../../mod.ts";
 * const px = [255, 0, 0, 255, 0, 0, 255, 255]; // a red and a blue pixel
 * const png = await encodePng(2, 1, new Uint8Array(px));
 * assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
 * const img = await decodePng(png);
 * assert.equal(img.width, 2);
 * assert.equal(img.height, 1);
 * assert.deepEqual([...img.data], px);
 * ```
 */
export async function encodePng(
  width: number,
  height: number,
  pixels: Uint8Array,
  opts: { channels?: 1 | 2 | 3 | 4 } = {},
): Promise<Uint8Array> {
  checkInt("PNG width", width, 1, 2 ** 31 - 1);
  checkInt("PNG height", height, 1, 2 ** 31 - 1);
  const ch = opts.channels ?? 4;
  if (!(ch in COLOR_TYPE)) {
    throw new RangeError(`Expected PNG channels to be 1, 2, 3 or 4 but found ${ch}`);
  }
  if (!(pixels instanceof Uint8Array) || pixels.length !== width * height * ch) {
    throw new RangeError(
      `Expected PNG pixels to be a Uint8Array of ${width}x${height}x${ch} = ${
        width * height * ch
      } bytes but found ${pixels?.length}`,
    );
  }
  const stride = width * ch;
  // Filter every row with "Sub" (type 1): flat plot backgrounds become runs of zeros.
  const raw = new Uint8Array(height * (stride + 1));
  for (let y = 0; y < height; y++) {
    const o = y * (stride + 1), r = y * stride;
    raw[o] = 1;
    for (let i = 0; i < stride; i++) {
      raw[o + 1 + i] = (pixels[r + i]! - (i >= ch ? pixels[r + i - ch]! : 0)) & 0xff;
    }
  }
  const ihdr = new Uint8Array(13);
  const dv = viewOf(ihdr);
  dv.setUint32(0, width);
  dv.setUint32(4, height);
  ihdr[8] = 8;
  ihdr[9] = COLOR_TYPE[ch]!;
  return concatBytes([
    SIGNATURE,
    chunk("IHDR", ihdr),
    chunk("IDAT", await compress(raw, "deflate")),
    chunk("IEND", new Uint8Array(0)),
  ]);
}

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/**
 * Decode an 8-bit, non-interlaced PNG (gray, gray+alpha, RGB, RGBA or palette; palette
 * images come back as RGB, or RGBA when they carry transparency). Chunk CRCs are checked;
 * the image data is inflated only up to the size the header declares, and a header that
 * declares more than the compressed data can hold or than `opts.maxBytes` (default 2 GiB)
 * is refused. Every problem raises a {@linkcode FileFormatError} naming `name`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { decodePng, encodePng } from "../../mod.ts";
 * const img = await decodePng(await encodePng(1, 1, new Uint8Array([7]), { channels: 1 }));
 * assert.equal(img.channels, 1);
 * assert.deepEqual([...img.data], [7]);
 * ```
 */
export async function decodePng(
  bytes: Uint8Array,
  name = "<bytes>",
  opts: DecodeOptions = {},
): Promise<RawImage> {
  if (!(bytes instanceof Uint8Array)) {
    throw new TypeError(`Expected PNG bytes to be a Uint8Array but found ${typeof bytes}`);
  }
  const maxBytes = maxBytesOf(opts);
  if (bytes.length < 8 || SIGNATURE.some((b, i) => bytes[i] !== b)) {
    throw new FileFormatError(name, "not a PNG file (bad signature)");
  }
  const dv = viewOf(bytes);
  let width = 0, height = 0, depth = 0, ctype = -1, interlace = 0;
  let palette: Uint8Array | undefined, trns: Uint8Array | undefined;
  const idat: Uint8Array[] = [];
  let p = 8, sawEnd = false;
  while (p + 12 <= bytes.length) {
    const len = dv.getUint32(p);
    const type = String.fromCharCode(...bytes.subarray(p + 4, p + 8));
    if (p + 12 + len > bytes.length) {
      throw new FileFormatError(name, `PNG chunk ${type} runs past the end (truncated?)`);
    }
    const body = bytes.subarray(p + 8, p + 8 + len);
    if (crc32(bytes.subarray(p + 4, p + 8 + len)) !== dv.getUint32(p + 8 + len)) {
      throw new FileFormatError(name, `PNG chunk ${type} has a bad CRC (file corrupted)`);
    }
    if ((p === 8) !== (type === "IHDR")) {
      throw new FileFormatError(
        name,
        p === 8 ? `PNG starts with chunk ${type}, not IHDR` : "PNG has a second IHDR chunk",
      );
    }
    if (type === "IHDR") {
      if (len !== 13) {
        throw new FileFormatError(name, `PNG IHDR chunk is ${len} bytes long, not 13`);
      }
      const h = viewOf(body);
      width = h.getUint32(0);
      height = h.getUint32(4);
      depth = body[8]!;
      ctype = body[9]!;
      if (body[10] !== 0 || body[11] !== 0) {
        throw new FileFormatError(
          name,
          `PNG compression/filter method ${body[10]}/${body[11]} is not 0/0`,
        );
      }
      interlace = body[12]!;
      if (width < 1 || height < 1 || width > 0x7fffffff || height > 0x7fffffff) {
        throw new FileFormatError(
          name,
          `PNG size ${width}×${height} is invalid (width and height must be in [1, 2^31 − 1])`,
        );
      }
    } else if (type === "PLTE") {
      if (len % 3 !== 0 || len > 768) {
        throw new FileFormatError(name, `PNG PLTE chunk of ${len} bytes is not 3·k ≤ 768`);
      }
      palette = body;
    } else if (type === "tRNS") trns = body;
    else if (type === "IDAT") idat.push(body);
    else if (type === "IEND") {
      sawEnd = true;
      break;
    }
    p += 12 + len;
  }
  if (ctype < 0) throw new FileFormatError(name, "PNG has no IHDR chunk");
  if (!sawEnd) throw new FileFormatError(name, "PNG has no IEND chunk (truncated?)");
  if (depth !== 8) {
    throw new FileFormatError(name, `PNG bit depth ${depth} is not supported (only 8-bit)`);
  }
  if (interlace !== 0) throw new FileFormatError(name, "interlaced PNGs are not supported");
  const srcCh = ({ 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 } as Record<number, number>)[ctype];
  if (srcCh === undefined) throw new FileFormatError(name, `unknown PNG color type ${ctype}`);
  const outCh = ctype === 3 ? (trns ? 4 : 3) : srcCh;
  const compressed = concatBytes(idat);
  // The filtered scanlines (one filter byte per row) and the decoded pixels.
  const rawBytes = height * (width * srcCh + 1);
  checkDeclared(
    name,
    `PNG ${width}×${height}×${outCh}`,
    rawBytes + width * height * outCh,
    maxBytes,
  );
  checkDeclared(name, `PNG ${width}×${height} image data`, rawBytes, Infinity, compressed.length);
  const raw = await inflateLimited(compressed, "deflate", rawBytes, name, "PNG image data");
  const stride = width * srcCh;
  if (raw.length < height * (stride + 1)) {
    throw new FileFormatError(name, "PNG image data is shorter than the image (truncated?)");
  }
  const px = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    const f = raw[y * (stride + 1)]!, src = y * (stride + 1) + 1, dst = y * stride;
    for (let i = 0; i < stride; i++) {
      const a = i >= srcCh ? px[dst + i - srcCh]! : 0;
      const b = y > 0 ? px[dst - stride + i]! : 0;
      const c = i >= srcCh && y > 0 ? px[dst - stride + i - srcCh]! : 0;
      const x = raw[src + i]!;
      let v: number;
      switch (f) {
        case 0:
          v = x;
          break;
        case 1:
          v = x + a;
          break;
        case 2:
          v = x + b;
          break;
        case 3:
          v = x + ((a + b) >> 1);
          break;
        case 4:
          v = x + paeth(a, b, c);
          break;
        default:
          throw new FileFormatError(name, `PNG row ${y} has unknown filter type ${f}`);
      }
      px[dst + i] = v & 0xff;
    }
  }
  if (ctype !== 3) return { width, height, channels: srcCh as 1 | 2 | 3 | 4, data: px };
  if (!palette) throw new FileFormatError(name, "palette PNG has no PLTE chunk");
  const ch = trns ? 4 : 3;
  const out = new Uint8Array(width * height * ch);
  for (let i = 0; i < width * height; i++) {
    const k = px[i]!;
    if (3 * k + 2 >= palette.length) {
      throw new FileFormatError(name, `palette index ${k} is outside the PLTE chunk`);
    }
    out[i * ch] = palette[3 * k]!;
    out[i * ch + 1] = palette[3 * k + 1]!;
    out[i * ch + 2] = palette[3 * k + 2]!;
    if (ch === 4) out[i * ch + 3] = k < trns!.length ? trns![k]! : 255;
  }
  return { width, height, channels: ch, data: out };
}

/**
 * Expand any {@linkcode RawImage} to RGBA.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { toRgba } from "../../mod.ts";
 * const img = toRgba({ width: 1, height: 1, channels: 1, data: new Uint8Array([9]) });
 * assert.deepEqual([...img.rgba], [9, 9, 9, 255]); // gray to RGB, opaque
 * ```
 */
export function toRgba(img: RawImage): RgbaImage {
  const n = img.width * img.height, c = img.channels, d = img.data;
  const rgba = new Uint8Array(n * 4);
  for (let i = 0; i < n; i++) {
    const g = d[i * c]!;
    rgba[4 * i] = g;
    rgba[4 * i + 1] = c >= 3 ? d[i * c + 1]! : g;
    rgba[4 * i + 2] = c >= 3 ? d[i * c + 2]! : g;
    rgba[4 * i + 3] = c === 4 ? d[i * c + 3]! : c === 2 ? d[i * c + 1]! : 255;
  }
  return { width: img.width, height: img.height, rgba };
}

/**
 * Convert float images (NCHW, values in `range`, default [-1, 1]) to the uint8 NHWC
 * layout that NumPy image batches use (e.g. the ADM evaluation suite's `arr_0`, written
 * with `saveNpz`). With `rgb: true` single-channel images are repeated to 3 channels.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { encodeNpz, toUint8Nhwc } from "../../mod.ts";
 * const u8 = toUint8Nhwc(new Float32Array([-1, 0, 1, 1]), { n: 1, channels: 1, height: 2, width: 2, rgb: true });
 * // [-1, 1] → [0, 255] rounded ((0 + 1)/2·255 = 127.5 → 128), gray replicated to RGB.
 * assert.deepEqual([...u8], [0, 0, 0, 128, 128, 128, 255, 255, 255, 255, 255, 255]);
 * const npz = encodeNpz({ arr_0: { shape: [1, 2, 2, 3], data: u8 } });
 * assert.ok(npz.length > u8.length);
 * ```
 */
export function toUint8Nhwc(
  images: Float32Array | ArrayLike<number>,
  opts: {
    n: number;
    channels: number;
    height: number;
    width: number;
    range?: [number, number];
    rgb?: boolean;
  },
): Uint8Array {
  const n = checkInt("images n", opts.n, 1);
  const c = checkInt("images channels", opts.channels, 1, 4);
  const h = checkInt("images height", opts.height, 1);
  const w = checkInt("images width", opts.width, 1);
  const [lo, hi] = opts.range ?? [-1, 1];
  if (!(hi > lo)) {
    throw new RangeError(`Expected images range [lo, hi] with hi > lo but found [${lo}, ${hi}]`);
  }
  if (images.length !== n * c * h * w) {
    throw new RangeError(
      `Expected images to have n*c*h*w = ${n * c * h * w} values but found ${images.length}`,
    );
  }
  const oc = opts.rgb && c === 1 ? 3 : c;
  const out = new Uint8Array(n * h * w * oc);
  const scale = 255 / (hi - lo);
  for (let k = 0; k < n; k++) {
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const o = ((k * h + y) * w + x) * oc;
        for (let ch = 0; ch < oc; ch++) {
          const v = images[((k * c + Math.min(ch, c - 1)) * h + y) * w + x]!;
          out[o + ch] = Math.max(0, Math.min(255, Math.round((v - lo) * scale)));
        }
      }
    }
  }
  return out;
}
