/**
 * @file Fashion-MNIST from its gzip IDX files (Debian's `dataset-fashion-mnist` installs them
 * in /usr/share/datasets/fashion-mnist), decompressed with the web `DecompressionStream`.
 * @module
 */
import { checkChoice, checkInt, denoApi, isNotFound } from "../_util.ts";
import {
  checkDeclared,
  concatBytes,
  FileFormatError,
  FileTypeError,
  Inflater,
  maxBytesOf,
} from "../formats/_bytes.ts";

/**
 * Fashion-MNIST's class names, by label.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FASHION_MNIST_CLASSES } from "../../mod.ts";
 * assert.equal(FASHION_MNIST_CLASSES.length, 10);
 * assert.equal(FASHION_MNIST_CLASSES[0], "T-shirt/top");
 * assert.equal(FASHION_MNIST_CLASSES[9], "Ankle boot");
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
  /** Largest decoded size in bytes a file may declare (default 2 GiB). */
  maxBytes?: number;
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

/** Options of {@linkcode decodeIdx}. */
export interface IdxOptions {
  /** Expected number of dimensions (the magic number's last byte); others raise a `FileTypeError`. */
  dims?: number;
  /** Read only the first `limit` items (stops decompressing early). */
  limit?: number;
  /** Gzip-compressed input (default: detected from the bytes; `true` for a stream). */
  gzip?: boolean;
  /** Size of the compressed input when `input` is a stream (bounds the declared size). */
  compressedBytes?: number;
  /** Largest decoded size in bytes the header may declare (default 2 GiB). */
  maxBytes?: number;
}

/** A decoded IDX file: extents (items first), the raw unsigned bytes, and the item count. */
export interface IdxArray {
  /** Extents as read: `[n, ...item]` with `n` the items loaded (≤ `total`). */
  shape: number[];
  /** Row-major unsigned bytes of the items loaded. */
  data: Uint8Array;
  /** Items the header declares. */
  total: number;
}

function u32(b: Uint8Array, off: number): number {
  return ((b[off]! << 24) | (b[off + 1]! << 16) | (b[off + 2]! << 8) | b[off + 3]!) >>> 0;
}

/**
 * Decode an IDX file of unsigned bytes (the MNIST format: magic `0x0000080D` with D
 * dimensions, D big-endian u32 extents, then the data), gzip-compressed or not, from bytes
 * or a stream. Decompression stops at the size the header declares: a header declaring no
 * items, an empty extent, more than `maxBytes`, more than the compressed input can hold, or
 * more (or less) data than present raises a {@linkcode FileFormatError}; a wrong magic number
 * or an undecompressable stream a {@linkcode FileTypeError}; both name `name`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { decodeIdx } from "../../mod.ts";
 * // magic 0x00000801 (unsigned bytes, one dimension), 3 items: 7, 8, 9
 * const raw = new Uint8Array([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]);
 * const a = await decodeIdx(raw, "labels.idx", { dims: 1 });
 * assert.equal(a.total, 3);
 * assert.deepEqual([...a.data], [7, 8, 9]);
 * await assert.rejects(decodeIdx(raw.slice(0, 9), "cut.idx"), /cut\.idx/); // truncated
 * ```
 */
export async function decodeIdx(
  input: Uint8Array | ReadableStream<Uint8Array>,
  name = "<bytes>",
  opts: IdxOptions = {},
): Promise<IdxArray> {
  const maxBytes = maxBytesOf(opts);
  const limit = opts.limit === undefined ? undefined : checkInt("IDX limit", opts.limit, 1);
  const isBytes = input instanceof Uint8Array;
  const gzip = opts.gzip ?? (isBytes ? input[0] === 0x1f && input[1] === 0x8b : true);
  const compressed = isBytes ? input.length : opts.compressedBytes;
  let src: {
    read(n: number): Promise<Uint8Array>;
    atEnd(): Promise<boolean>;
    close(): Promise<void>;
  };
  if (gzip) {
    src = new Inflater(
      input,
      "gzip",
      (m) =>
        new FileTypeError(
          name,
          `Expected ${name} to be a valid gzip file but decompression failed (truncated or corrupted?): ${m}`,
        ),
    );
  } else {
    let all: Uint8Array;
    if (isBytes) all = input;
    else {
      // An uncompressed stream: read it whole, but no more than the cap allows.
      const parts: Uint8Array[] = [];
      let got = 0;
      const reader = input.getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          got += value.length;
          checkDeclared(name, "IDX file", got, maxBytes + 4 + 4 * 255);
          parts.push(value);
        }
      } finally {
        await reader.cancel().catch(() => {});
      }
      all = concatBytes(parts);
    }
    let off = 0;
    src = {
      read: (n) => {
        const out = all.subarray(off, off + n);
        off += out.length;
        return Promise.resolve(out);
      },
      atEnd: () => Promise.resolve(off >= all.length),
      close: () => Promise.resolve(),
    };
  }
  try {
    const head = await src.read(4);
    const magic = head.length === 4 ? u32(head, 0) : -1;
    const dims = head[3] ?? 0;
    if (head.length < 4 || head[0] !== 0 || head[1] !== 0 || dims < 1) {
      throw new FileTypeError(
        name,
        `Expected ${name} to start with an IDX magic number 0x000008dd but found ${
          head.length < 4 ? `${head.length} bytes` : `0x${magic.toString(16).padStart(8, "0")}`
        }`,
      );
    }
    if (opts.dims !== undefined && (head[2] !== 8 || dims !== opts.dims)) {
      const want = 0x800 + opts.dims;
      throw new FileTypeError(
        name,
        `Expected ${name} to start with IDX magic 0x${want.toString(16).padStart(8, "0")} ` +
          `(unsigned bytes, ${opts.dims}-D) but found 0x${magic.toString(16).padStart(8, "0")}`,
      );
    }
    if (head[2] !== 8) {
      throw new FileFormatError(
        name,
        `IDX element type 0x${head[2]!.toString(16)} is not supported (only 0x08, unsigned bytes)`,
      );
    }
    const hdr = await src.read(4 * dims);
    const headerLen = 4 + 4 * dims;
    if (hdr.length < 4 * dims) {
      throw new FileFormatError(
        name,
        `Expected ${name} to hold an IDX header of ${headerLen} bytes but found ${4 + hdr.length}`,
      );
    }
    const extents = Array.from({ length: dims }, (_, i) => u32(hdr, 4 * i));
    if (extents.includes(0)) {
      throw new FileFormatError(
        name,
        `IDX header declares extents ${extents.join("×")}: no data (an extent is 0)`,
      );
    }
    const total = extents[0]!;
    const itemBytes = extents.slice(1).reduce((a, b) => a * b, 1);
    const n = limit === undefined ? total : Math.min(limit, total);
    const declared = total * itemBytes;
    const what = `IDX ${extents.join("×")}`;
    checkDeclared(name, what, n * itemBytes, maxBytes);
    // What the items to read need must fit in the input (deflate expands at most 1032:1).
    if (compressed !== undefined) {
      if (gzip) checkDeclared(name, what, n * itemBytes, Infinity, compressed);
      else if (n * itemBytes > compressed - headerLen) {
        throw new FileFormatError(
          name,
          `Expected ${
            headerLen + n * itemBytes
          } bytes in ${name} (${what}) but found ${compressed}`,
        );
      }
    }
    const data = await src.read(n * itemBytes);
    if (data.length < n * itemBytes) {
      throw new FileFormatError(
        name,
        `Expected ${headerLen + n * itemBytes} bytes in ${name} (${n} items of ${
          extents.slice(1).join("×") || "1 byte"
        }) but found ${headerLen + data.length}`,
      );
    }
    if (n === total && !(await src.atEnd())) {
      throw new FileFormatError(
        name,
        `Expected ${headerLen + declared} bytes in ${name} (${what}) but it holds more data`,
      );
    }
    return { shape: [n, ...extents.slice(1)], data, total };
  } finally {
    await src.close();
  }
}

/**
 * Load Fashion-MNIST from the gzip IDX files (read with {@linkcode decodeIdx}), validating
 * magic numbers, dimensions and lengths: a `FileTypeError` (a `TypeError`) on a wrong magic
 * number or a broken gzip stream, a `FileFormatError` (a `RangeError`) on sizes or labels,
 * both naming the file. Needs `--allow-read` on `dir`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { loadFashionMnist } from "../../mod.ts";
 * const ds = await loadFashionMnist({ split: "test", limit: 100 });
 * assert.equal(ds.n, 100);
 * assert.equal(ds.total, 10000); // the t10k files
 * assert.equal(ds.labels[0], 9); // the first test image is an ankle boot
 * assert.equal(ds.classNames[ds.labels[0]!], "Ankle boot");
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
  const read = async (path: string, dims: number) => {
    let file: Deno.FsFile;
    try {
      file = await denoApi(
        "loadFashionMnist",
        "fetch the IDX files and pass their bytes to decodeIdx",
      )
        .open(path, { read: true });
    } catch (e) {
      if (isNotFound(e)) {
        throw new TypeError(
          `Fashion-MNIST file ${path} not found; install it with 'apt-get install dataset-fashion-mnist' or pass dir`,
        );
      }
      throw e;
    }
    const size = (await file.stat()).size;
    return await decodeIdx(file.readable, path, {
      dims,
      limit,
      gzip: true,
      compressedBytes: size,
      maxBytes: opts.maxBytes,
    });
  };
  const img = await read(imgPath, 3);
  const lbl = await read(lblPath, 1);
  const [, rows, cols] = img.shape as [number, number, number];
  const count = img.total;
  if (rows !== 28 || cols !== 28) {
    throw new FileFormatError(
      imgPath,
      `Expected 28×28 images in ${imgPath} but the header says ${rows}×${cols}`,
    );
  }
  if (lbl.total !== count) {
    throw new FileFormatError(
      lblPath,
      `Expected as many labels as images but ${lblPath} declares ${lbl.total} and ${imgPath} ${count}`,
    );
  }
  const n = img.shape[0]!;
  const px = rows * cols;
  const images = new Float32Array(n * px);
  for (let i = 0; i < n * px; i++) images[i] = img.data[i]! / 127.5 - 1;
  const labels = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const l = lbl.data[i]!;
    if (l > 9) {
      throw new FileFormatError(
        lblPath,
        `Expected labels in 0..9 in ${lblPath} but found ${l} at index ${i}`,
      );
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
