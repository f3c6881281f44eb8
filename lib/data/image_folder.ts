/**
 * @file Image folders: `dir/<class>/*.png`, one subfolder per class (sorted names give the
 * labels), decoded with the library's own PNG reader.
 * @module
 */
import { decodePng, type RawImage } from "../formats/png.ts";
import { checkInt, denoApi, isNotFound } from "../_util.ts";
import type { ImageDataset } from "./fashion_mnist.ts";

/** Options for {@link loadImageFolder}. */
export interface ImageFolderOptions {
  /** Resize every image to size×size (bilinear); without it all images must share one size. */
  size?: number;
  /** Output channels: 1 (gray, by luma) or 3 (RGB; default). Alpha is dropped. */
  channels?: 1 | 3;
  /** Read at most this many images per class (in sorted file order). */
  limitPerClass?: number;
  /** Largest decoded size in bytes one PNG may declare (default 2 GiB). */
  maxBytes?: number;
}

/** Pixel (x, y) channel c of an image in [0, 255], converted to `channels` (1 or 3). */
function pixel(img: RawImage, x: number, y: number, c: number, channels: 1 | 3): number {
  const base = (y * img.width + x) * img.channels;
  const d = img.data;
  if (img.channels <= 2) return d[base]!;
  if (channels === 3) return d[base + c]!;
  // ITU-R BT.601 luma, as PIL's convert("L").
  return 0.299 * d[base]! + 0.587 * d[base + 1]! + 0.114 * d[base + 2]!;
}

/** Write one image as C×H×W values in [−1, 1] at `out[off…]`, resizing bilinearly if needed. */
function writeImage(
  img: RawImage,
  h: number,
  w: number,
  channels: 1 | 3,
  out: Float32Array,
  off: number,
): void {
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < h; y++) {
      // Pixel-centre alignment (align_corners = false).
      const sy = Math.min(img.height - 1, Math.max(0, ((y + 0.5) * img.height) / h - 0.5));
      const y0 = Math.floor(sy), y1 = Math.min(img.height - 1, y0 + 1), fy = sy - y0;
      for (let x = 0; x < w; x++) {
        const sx = Math.min(img.width - 1, Math.max(0, ((x + 0.5) * img.width) / w - 0.5));
        const x0 = Math.floor(sx), x1 = Math.min(img.width - 1, x0 + 1), fx = sx - x0;
        const v = (1 - fy) *
            ((1 - fx) * pixel(img, x0, y0, c, channels) + fx * pixel(img, x1, y0, c, channels)) +
          fy * ((1 - fx) * pixel(img, x0, y1, c, channels) + fx * pixel(img, x1, y1, c, channels));
        out[off + (c * h + y) * w + x] = v / 127.5 - 1;
      }
    }
  }
}

/**
 * Load `dir/<class>/*.png` into memory as N×C×H×W floats in [−1, 1] with labels by sorted class
 * name. Needs `--allow-read` on `dir`. Corrupted PNGs (or ones declaring more pixels than
 * their data holds, or than `maxBytes`) raise a `FileFormatError` naming the file.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { loadImageFolder } from "../../mod.ts";
 * import { encodePng } from "../formats/png.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.mkdir(`${dir}/cat`);
 * await Deno.writeFile(`${dir}/cat/a.png`, await encodePng(2, 2, new Uint8Array(16).fill(255)));
 * const ds = await loadImageFolder(dir, { channels: 1 });
 * assert.equal(ds.n, 1);
 * assert.deepEqual([...ds.shape], [1, 2, 2]);
 * assert.deepEqual([...ds.classNames], ["cat"]);
 * assert.equal(ds.labels[0], 0);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function loadImageFolder(
  dir: string,
  opts: ImageFolderOptions = {},
): Promise<ImageDataset> {
  const channels = opts.channels ?? 3;
  if (channels !== 1 && channels !== 3) {
    throw new RangeError(`Expected image folder channels to be 1 or 3 but found ${channels}`);
  }
  const size = opts.size === undefined ? undefined : checkInt("image size", opts.size, 1);
  const limit = opts.limitPerClass === undefined
    ? Infinity
    : checkInt("limitPerClass", opts.limitPerClass, 1);
  const fs = denoApi("loadImageFolder", "pass PNG bytes to decodePng");
  const classNames: string[] = [];
  try {
    for await (const e of fs.readDir(dir)) if (e.isDirectory) classNames.push(e.name);
  } catch (e) {
    if (isNotFound(e)) throw new TypeError(`Image folder ${dir} not found`);
    throw e;
  }
  classNames.sort();
  const files: { path: string; label: number }[] = [];
  for (let label = 0; label < classNames.length; label++) {
    const names: string[] = [];
    for await (const e of fs.readDir(`${dir}/${classNames[label]}`)) {
      if (e.isFile && e.name.toLowerCase().endsWith(".png")) names.push(e.name);
    }
    names.sort();
    for (const nm of names.slice(0, limit)) {
      files.push({ path: `${dir}/${classNames[label]}/${nm}`, label });
    }
  }
  if (files.length === 0) {
    throw new RangeError(`Expected ${dir} to hold class subfolders with .png files but found none`);
  }
  let h = size ?? 0, w = size ?? 0;
  let images = new Float32Array(0);
  const labels = new Float32Array(files.length);
  for (let k = 0; k < files.length; k++) {
    const { path, label } = files[k]!;
    const img = await decodePng(await fs.readFile(path), path, { maxBytes: opts.maxBytes });
    if (k === 0) {
      if (size === undefined) [h, w] = [img.height, img.width];
      images = new Float32Array(files.length * channels * h * w);
    }
    if (size === undefined && (img.height !== h || img.width !== w)) {
      throw new RangeError(
        `Expected every image to be ${w}×${h} (pass size to resize) but ${path} is ${img.width}×${img.height}`,
      );
    }
    writeImage(img, h, w, channels, images, k * channels * h * w);
    labels[k] = label;
  }
  return {
    images,
    labels,
    n: files.length,
    shape: [channels, h, w],
    numClasses: classNames.length,
    classNames,
  };
}
