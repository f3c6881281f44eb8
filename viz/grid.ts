/**
 * @file Image grids: tile a batch of images into one RGBA picture (torchvision's
 * `make_grid`), for sample figures.
 * @module
 */
import { checkInt } from "../lib/_util.ts";
import type { RgbaImage } from "../lib/formats/png.ts";

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
