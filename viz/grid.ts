/**
 * @file Image grids: tile a batch of images into one RGBA picture (torchvision's
 * `make_grid`), and the labelled figure of it (nearest-neighbour upscaled, class names on the
 * rows) that trainers write beside their sample grids. No permissions, no npm packages.
 * @module
 */
import { checkInt } from "../lib/_util.ts";
import { encodePng, type RgbaImage } from "../lib/formats/png.ts";

const FONT = "DejaVu Sans, Helvetica, Arial, sans-serif";

/** Options of {@linkcode imageGrid}. */
export interface ImageGridOptions {
  /** Number of images in the batch. */
  n: number;
  /** Channels per image (1 or 3). */
  channels: number;
  /** Image height. */
  height: number;
  /** Image width. */
  width: number;
  /** Images per row (default ceil(sqrt(n))). */
  nrow?: number;
  /** Value range mapped to [0, 255] (default [-1, 1]). */
  range?: [number, number];
  /** Pixels between tiles (default 2). */
  padding?: number;
  /** Layout of `images`: "nchw" (default, PyTorch) or "nhwc". */
  layout?: "nchw" | "nhwc";
}

/**
 * Tile a batch of images (`n × c × h × w` floats, or NHWC) into one RGBA grid, mapping
 * `range` to 0..255 with clipping (like torchvision's `save_image(normalize=True,
 * value_range=(-1, 1))`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { encodePng } from "../mod.ts";
 * import { imageGrid } from "./mod.ts";
 * const imgs = new Float32Array(4 * 1 * 3 * 3).fill(1);
 * const grid = imageGrid(imgs, { n: 4, channels: 1, height: 3, width: 3, nrow: 2 });
 * // 2 tiles of 3 px and 3 paddings of 2 px each way.
 * assert.equal(grid.width, 2 * 3 + 3 * 2);
 * assert.equal(grid.height, 2 * 3 + 3 * 2);
 * // The first tile's top-left pixel (at (2, 2)) is value 1 → white.
 * const i = 4 * (2 * grid.width + 2);
 * assert.deepEqual([...grid.rgba.subarray(i, i + 4)], [255, 255, 255, 255]);
 * const png = await encodePng(grid.width, grid.height, grid.rgba);
 * assert.equal(png[1], 0x50);
 * ```
 */
export function imageGrid(
  images: Float32Array | ArrayLike<number>,
  opts: ImageGridOptions,
): RgbaImage {
  const n = checkInt("imageGrid n", opts.n, 1);
  const c = checkInt("imageGrid channels", opts.channels, 1, 4);
  const h = checkInt("imageGrid height", opts.height, 1);
  const w = checkInt("imageGrid width", opts.width, 1);
  const nrow = checkInt("imageGrid nrow", opts.nrow ?? Math.ceil(Math.sqrt(n)), 1);
  const pad = checkInt("imageGrid padding", opts.padding ?? 2, 0);
  const [lo, hi] = opts.range ?? [-1, 1];
  if (!(hi > lo)) {
    throw new RangeError(`Expected imageGrid range [lo, hi] with hi > lo but found [${lo}, ${hi}]`);
  }
  if (images.length !== n * c * h * w) {
    throw new RangeError(
      `Expected imageGrid images to have n*c*h*w = ${
        n * c * h * w
      } values but found ${images.length}`,
    );
  }
  const nhwc = opts.layout === "nhwc";
  const cols = Math.min(nrow, n), rows = Math.ceil(n / nrow);
  const W = cols * w + (cols + 1) * pad, H = rows * h + (rows + 1) * pad;
  const rgba = new Uint8Array(W * H * 4);
  for (let i = 3; i < rgba.length; i += 4) rgba[i] = 255;
  const scale = 255 / (hi - lo);
  for (let k = 0; k < n; k++) {
    const gx = pad + (k % nrow) * (w + pad), gy = pad + Math.floor(k / nrow) * (h + pad);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const o = ((gy + y) * W + gx + x) * 4;
        for (let ch = 0; ch < 3; ch++) {
          const cc = c === 1 ? 0 : Math.min(ch, c - 1);
          const idx = nhwc ? ((k * h + y) * w + x) * c + cc : ((k * c + cc) * h + y) * w + x;
          const v = (images[idx]! - lo) * scale;
          rgba[o + ch] = Math.max(0, Math.min(255, Math.round(v)));
        }
      }
    }
  }
  return { width: W, height: H, rgba };
}

/**
 * Upscale an RGBA image by an integer factor with nearest-neighbour sampling (pixels stay
 * sharp squares).
 *
 * @example
 * ```ts
 * import { upscaleNearest } from "./grid.ts";
 * import { strict as assert } from "node:assert";
 * const big = upscaleNearest({ width: 1, height: 1, rgba: new Uint8Array([9, 8, 7, 255]) }, 3);
 * assert.equal(big.width, 3);
 * assert.deepEqual(Array.from(big.rgba.subarray(32, 36)), [9, 8, 7, 255]);
 * ```
 */
export function upscaleNearest(img: RgbaImage, factor: number): RgbaImage {
  const k = checkInt("upscale factor", factor, 1, 64);
  const W = img.width * k, H = img.height * k;
  const out = new Uint8Array(W * H * 4);
  const src = new Uint32Array(img.rgba.buffer, img.rgba.byteOffset, img.width * img.height);
  const dst = new Uint32Array(out.buffer);
  for (let y = 0; y < H; y++) {
    const row = Math.floor(y / k) * img.width;
    for (let x = 0; x < W; x++) dst[y * W + x] = src[row + Math.floor(x / k)]!;
  }
  return { width: W, height: H, rgba: out };
}

const esc = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

function base64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

/** Options of {@linkcode labelledGridSvg}. */
export interface LabelledGridOptions {
  /** Images per row (the samples of one class). */
  cols: number;
  /** One label per row, e.g. the class names. */
  rowLabels: readonly string[];
  /** One label per column, drawn above it (e.g. the number of sampling steps). */
  colLabels?: readonly string[];
  /** Nearest-neighbour upscale factor (default 3). */
  scale?: number;
  /** Value range of the images mapped to 0..255 (default [-1, 1]). */
  range?: [number, number];
  /** Pixels between tiles before upscaling (default 1). */
  padding?: number;
  /** Title above the grid. */
  title?: string;
}

/**
 * An image grid as SVG: row `r` holds images `r·cols … r·cols + cols − 1` of an NCHW batch
 * (1 or 3 channels), upscaled by nearest neighbour and embedded as one PNG, with the row
 * labels (class names) as text on the left and optional column labels above. Convert with
 * `svgToPng` (`./charts.ts`) for a raster; the SVG itself needs no permission to write.
 *
 * @example
 * ```ts
 * import { labelledGridSvg } from "./grid.ts";
 * import { strict as assert } from "node:assert";
 * const imgs = new Float32Array(2 * 2 * 1 * 4 * 4).map((_, i) => (i % 7) / 3 - 1);
 * const svg = await labelledGridSvg(imgs, [1, 4, 4], { cols: 2, rowLabels: ["T-shirt/top", "Trouser"] });
 * assert.ok(svg.includes("T-shirt/top") && svg.includes("data:image/png;base64,"));
 * // 4×4 pixels upscaled 3× per tile, 1-pixel padding: (2·4 + 3)·3 = 33 pixels wide.
 * assert.match(svg, /<image x="\d+" y="\d+" width="33" height="33"/);
 * ```
 */
export async function labelledGridSvg(
  images: ArrayLike<number>,
  shape: readonly [number, number, number],
  opts: LabelledGridOptions,
): Promise<string> {
  const [c, h, w] = shape;
  checkInt("grid image channels", c, 1, 3);
  const cols = checkInt("grid cols", opts.cols, 1);
  const rows = opts.rowLabels.length;
  const per = c * h * w;
  if (images.length !== rows * cols * per) {
    throw new RangeError(
      `Expected ${rows} rows × ${cols} images of [${shape}] = ${
        rows * cols * per
      } values but found ${images.length}`,
    );
  }
  const k = checkInt("grid scale", opts.scale ?? 3, 1, 64);
  const pad = checkInt("grid padding", opts.padding ?? 1, 0);
  const [lo, hi] = opts.range ?? [-1, 1];
  const W0 = cols * w + (cols + 1) * pad, H0 = rows * h + (rows + 1) * pad;
  const rgba = new Uint8Array(W0 * H0 * 4).fill(255);
  for (let n = 0; n < rows * cols; n++) {
    const gx = pad + (n % cols) * (w + pad), gy = pad + Math.floor(n / cols) * (h + pad);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const o = ((gy + y) * W0 + gx + x) * 4;
        for (let ch = 0; ch < 3; ch++) {
          const v = images[n * per + (c === 1 ? 0 : ch) * h * w + y * w + x]!;
          rgba[o + ch] = Math.max(0, Math.min(255, Math.round(((v - lo) / (hi - lo)) * 255)));
        }
      }
    }
  }
  const big = upscaleNearest({ width: W0, height: H0, rgba }, k);
  const png = await encodePng(big.width, big.height, big.rgba);
  const fontPx = 13;
  const labelW = Math.ceil(12 + 7.2 * Math.max(1, ...opts.rowLabels.map((l) => l.length)));
  const colLabels = opts.colLabels ?? [];
  if (colLabels.length !== 0 && colLabels.length !== cols) {
    throw new RangeError(`Expected ${cols} column labels but found ${colLabels.length}`);
  }
  const top = (opts.title ? 28 : 4) + (colLabels.length ? 18 : 0);
  const W = labelW + big.width + 4, H = top + big.height + 4;
  const rowH = (h + pad) * k;
  const texts = opts.rowLabels.map((l, r) =>
    `<text x="${labelW - 8}" y="${
      top + pad * k + r * rowH + (h * k) / 2
    }" text-anchor="end" dominant-baseline="middle">${esc(l)}</text>`
  );
  const heads = colLabels.map((l, j) =>
    `<text x="${labelW + (pad + j * (w + pad) + w / 2) * k}" y="${top - 6}" text-anchor="middle">${
      esc(l)
    }</text>`
  );
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">` +
    `<rect width="100%" height="100%" fill="white"/>` +
    `<g font-family="${FONT}" font-size="${fontPx}" fill="#222">` +
    (opts.title
      ? `<text x="4" y="18" font-size="15" font-weight="600">${esc(opts.title)}</text>`
      : "") +
    texts.join("") + heads.join("") + `</g>` +
    `<image x="${labelW}" y="${top}" width="${big.width}" height="${big.height}" ` +
    `style="image-rendering:pixelated" href="data:image/png;base64,${base64(png)}"/></svg>`;
}
