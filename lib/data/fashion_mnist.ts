/**
 * @file Fashion-MNIST from its gzip IDX files (Debian's `dataset-fashion-mnist` installs them
 * in /usr/share/datasets/fashion-mnist), decompressed with the web `DecompressionStream`.
 * @module
 */
import { checkChoice, checkInt, denoApi, isNotFound } from "../_util.ts";

/**
 * Fashion-MNIST's class names, by label.
 *
 * @example
 * ```ts
 * import { FASHION_MNIST_CLASSES } from "../../mod.ts";
 * console.log(FASHION_MNIST_CLASSES[9]); // Ankle boot
 * ```
 */
export const FASHION_MNIST_CLASSES: readonly string[] = [
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
];

/** Options for {@link loadFashionMnist}. */
export interface FashionMnistOptions {
  /** Directory of the four `.gz` files (default /usr/share/datasets/fashion-mnist). */
  dir?: string;
  /** `"train"` (60000, default) or `"test"` (10000). */
  split?: "train" | "test";
  /** Read only the first `limit` examples (stops decompressing early). */
  limit?: number;
}

/** An image dataset in memory. */
export interface ImageDataset {
  /** N×C×H×W pixels scaled to [−1, 1]. */
  images: Float32Array;
  /** N labels, as exact f32 integers. */
  labels: Float32Array;
  /** Number of examples loaded. */
  n: number;
  /** [C, H, W]. */
  shape: [number, number, number];
  /** Number of classes. */
  numClasses: number;
  /** Class names, by label. */
  classNames: string[];
}

/** Fashion-MNIST in memory, plus the example count the files declare. */
export interface FashionMnist extends ImageDataset {
  /** Examples in the files (from the IDX header), whatever `limit` was. */
  total: number;
}

/** Read up to `need` bytes of a gzip file's decompressed stream (all of it when undefined). */
async function gunzip(path: string, need?: number): Promise<Uint8Array> {
  let file: Deno.FsFile;
  try {
    file = await denoApi("loadFashionMnist", "fetch the IDX files and decode them yourself")
      .open(path, { read: true });
  } catch (e) {
    if (isNotFound(e)) {
      throw new TypeError(
        `Fashion-MNIST file ${path} not found; install it with 'apt-get install dataset-fashion-mnist' or pass dir`,
      );
    }
    throw e;
  }
  const chunks: Uint8Array[] = [];
  let got = 0;
  const reader = file.readable.pipeThrough(new DecompressionStream("gzip")).getReader();
  try {
    while (need === undefined || got < need) {
      const { value, done } = await reader.read();
      if (done) break;
      chunks.push(value);
      got += value.length;
    }
  } catch (e) {
    throw new TypeError(
      `Expected ${path} to be a valid gzip file but decompression failed (truncated or corrupted?): ${
        (e as Error).message
      }`,
    );
  } finally {
    await reader.cancel().catch(() => {});
  }
  const out = new Uint8Array(got);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

function u32(b: Uint8Array, off: number): number {
  return ((b[off]! << 24) | (b[off + 1]! << 16) | (b[off + 2]! << 8) | b[off + 3]!) >>> 0;
}

/** Parse an IDX header: magic 0x0000080D with D dims (unsigned bytes), then D big-endian sizes. */
function idxHeader(path: string, b: Uint8Array, dims: number): number[] {
  const headerLen = 4 + 4 * dims;
  if (b.length < headerLen) {
    throw new RangeError(
      `Expected ${path} to hold an IDX header of ${headerLen} bytes but found ${b.length}`,
    );
  }
  const magic = u32(b, 0);
  const want = 0x800 + dims;
  if (magic !== want) {
    throw new TypeError(
      `Expected ${path} to start with IDX magic 0x${want.toString(16).padStart(8, "0")} ` +
        `(unsigned bytes, ${dims}-D) but found 0x${magic.toString(16).padStart(8, "0")}`,
    );
  }
  return Array.from({ length: dims }, (_, i) => u32(b, 4 + 4 * i));
}

/**
 * Load Fashion-MNIST from the gzip IDX files, validating magic numbers, dimensions and lengths
 * (a `TypeError`/`RangeError` naming the file on truncated or corrupted input). Needs
 * `--allow-read` on `dir`.
 *
 * @example
 * ```ts
 * import { loadFashionMnist } from "../../mod.ts";
 * const ds = await loadFashionMnist({ split: "test", limit: 100 });
 * console.log(ds.n, ds.total, ds.labels[0], ds.classNames[ds.labels[0]!]); // 100 10000 9 "Ankle boot"
 * ```
 */
export async function loadFashionMnist(opts: FashionMnistOptions = {}): Promise<FashionMnist> {
  const dir = opts.dir ?? "/usr/share/datasets/fashion-mnist";
  const split = checkChoice(
    "Fashion-MNIST split",
    opts.split ?? "train",
    ["train", "test"] as const,
  );
  const limit = opts.limit === undefined ? undefined : checkInt("limit", opts.limit, 1);
  const prefix = split === "train" ? "train" : "t10k";
  const imgPath = `${dir}/${prefix}-images-idx3-ubyte.gz`;
  const lblPath = `${dir}/${prefix}-labels-idx1-ubyte.gz`;
  const img = await gunzip(imgPath, limit === undefined ? undefined : 16 + limit * 784);
  const lbl = await gunzip(lblPath, limit === undefined ? undefined : 8 + limit);
  const [count, rows, cols] = idxHeader(imgPath, img, 3) as [number, number, number];
  const [lcount] = idxHeader(lblPath, lbl, 1) as [number];
  if (rows !== 28 || cols !== 28) {
    throw new RangeError(`Expected 28×28 images in ${imgPath} but the header says ${rows}×${cols}`);
  }
  if (lcount !== count) {
    throw new RangeError(
      `Expected as many labels as images but ${lblPath} declares ${lcount} and ${imgPath} ${count}`,
    );
  }
  const n = limit === undefined ? count : Math.min(limit, count);
  const px = rows * cols;
  if (img.length < 16 + n * px || (limit === undefined && img.length !== 16 + n * px)) {
    throw new RangeError(
      `Expected ${
        16 + n * px
      } bytes in ${imgPath} (${n} images of ${rows}×${cols}) but found ${img.length}`,
    );
  }
  if (lbl.length < 8 + n || (limit === undefined && lbl.length !== 8 + n)) {
    throw new RangeError(
      `Expected ${8 + n} bytes in ${lblPath} (${n} labels) but found ${lbl.length}`,
    );
  }
  const images = new Float32Array(n * px);
  for (let i = 0; i < n * px; i++) images[i] = img[16 + i]! / 127.5 - 1;
  const labels = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const l = lbl[8 + i]!;
    if (l > 9) {
      throw new RangeError(`Expected labels in 0..9 in ${lblPath} but found ${l} at index ${i}`);
    }
    labels[i] = l;
  }
  return {
    images,
    labels,
    n,
    total: count,
    shape: [1, rows, cols],
    numClasses: 10,
    classNames: [...FASHION_MNIST_CLASSES],
  };
}
