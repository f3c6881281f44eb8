/**
 * @file Labelled array datasets from NumPy files (what `--data-dir` points at): an `.npz`
 * holding `x` [n, ...] and integer `labels` [n], validated on load so a fractional or
 * out-of-range label, or a NaN/Inf value, is refused with the file and the first bad index
 * instead of being truncated or trained on.
 * @module
 */
import { FileFormatError, type LoadOptions } from "../formats/_bytes.ts";
import { loadNpz, type NpyArray } from "../formats/npy.ts";
import { checkInt, denoApi, isNotFound } from "../_util.ts";

/** Options of {@linkcode loadArrayDataset} and {@linkcode validateArrayDataset}. */
export interface ArrayDatasetOptions extends LoadOptions {
  /** Name of the data array (default `"x"`). */
  xName?: string;
  /** Name of the labels array (default `"labels"`). */
  labelsName?: string;
  /** Whether a file without labels is refused (default true); otherwise labels are all 0. */
  requireLabels?: boolean;
  /** Labels must lie in [0, maxClasses) (default 65536, at most 2^24). */
  maxClasses?: number;
}

/** A validated labelled dataset: rows of `x` (flattened) with one integer label each. */
export interface ArrayDataset {
  /** n·dim finite values, row-major. */
  x: Float32Array;
  /** n integer labels in [0, numClasses). */
  labels: Int32Array;
  /** Number of rows. */
  n: number;
  /** Values per row (the product of `shape`). */
  dim: number;
  /** Extents of one row (`x.shape` without its first axis). */
  shape: number[];
  /** 1 + the largest label. */
  numClasses: number;
}

/**
 * Validate named arrays (e.g. from {@linkcode decodeNpz}) as a labelled dataset: `x` must
 * be [n, ...] with finite values, `labels` [n] integers in [0, maxClasses). Errors are
 * {@linkcode FileFormatError}s naming `file` and the first bad index.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { validateArrayDataset } from "../../mod.ts";
 * const ds = validateArrayDataset({
 *   x: { dtype: "<f4", shape: [2, 2], data: new Float32Array([0, 1, 2, 3]) },
 *   labels: { dtype: "<i8", shape: [2], data: new Float32Array([1, 0]) },
 * }, "d.npz");
 * assert.equal(ds.n, 2);
 * assert.equal(ds.numClasses, 2);
 * assert.equal(ds.labels[0], 1);
 * // A fractional label is refused, naming the file and the index.
 * assert.throws(() =>
 *   validateArrayDataset({
 *     x: { dtype: "<f4", shape: [2, 1], data: new Float32Array([0, 1]) },
 *     labels: { dtype: "<f4", shape: [2], data: new Float32Array([0, 0.5]) },
 *   }, "frac.npz"), (e) => (e as Error).message.includes("frac.npz") && (e as Error).message.includes("index 1"));
 * ```
 */
export function validateArrayDataset(
  arrays: Record<string, NpyArray>,
  file: string,
  opts: ArrayDatasetOptions = {},
): ArrayDataset {
  const xName = opts.xName ?? "x", lName = opts.labelsName ?? "labels";
  const maxClasses = checkInt("maxClasses", opts.maxClasses ?? 65536, 1, 2 ** 24);
  const has = (k: string) => Object.prototype.hasOwnProperty.call(arrays, k);
  if (!has(xName)) throw new FileFormatError(file, `expected an array named "${xName}"`);
  const xs = arrays[xName]!;
  if (!has(lName) && (opts.requireLabels ?? true)) {
    throw new FileFormatError(
      file,
      `has no "${lName}" array: the class-conditional objective needs one integer label per row of ${xName}`,
    );
  }
  const n = xs.shape[0] ?? 0;
  const ls = has(lName)
    ? arrays[lName]!
    : { dtype: "<i4", shape: [n], data: new Float32Array(n) } as NpyArray;
  if (n < 1 || ls.shape.length !== 1 || ls.shape[0] !== n) {
    throw new FileFormatError(
      file,
      `expected ${xName} [n, ...] and ${lName} [n] with n >= 1 but found [${
        xs.shape.join(", ")
      }] and [${ls.shape.join(", ")}]`,
    );
  }
  const x = xs.data;
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(x[i]!)) {
      const shape = xs.shape.slice(1), dim = x.length / n;
      throw new FileFormatError(
        file,
        `${xName} holds ${x[i]} at flat index ${i} (row ${Math.floor(i / dim)}${
          shape.length ? `, shape [${xs.shape.join(", ")}]` : ""
        }): data must be finite`,
      );
    }
  }
  // Check the values before any integer conversion: Int32Array.from would truncate 0.5 to 0.
  const labels = new Int32Array(n);
  let numClasses = 0;
  for (let i = 0; i < n; i++) {
    const l = ls.data[i]!;
    if (!Number.isInteger(l) || l < 0 || l >= maxClasses) {
      throw new FileFormatError(
        file,
        `${lName} holds ${l} at index ${i}: labels must be integers in [0, ${maxClasses})` +
          (l >= maxClasses && Number.isInteger(l) ? " (pass a larger maxClasses)" : ""),
      );
    }
    labels[i] = l;
    if (l + 1 > numClasses) numClasses = l + 1;
  }
  return { x, labels, n, dim: x.length / n, shape: xs.shape.slice(1), numClasses };
}

/**
 * Load a labelled dataset from an `.npz` file, or from `data.npz` inside a directory, and
 * validate it with {@linkcode validateArrayDataset}. Needs `--allow-read` on the path.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { loadArrayDataset, saveNpz } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * await saveNpz(`${dir}/data.npz`, {
 *   x: { shape: [3, 2], data: new Float32Array([0, 1, 2, 3, 4, 5]) },
 *   labels: { shape: [3], data: new Float32Array([0, 2, 1]), dtype: "<i8" },
 * });
 * const ds = await loadArrayDataset(dir);
 * assert.deepEqual([ds.n, ds.dim, ds.numClasses], [3, 2, 3]);
 * assert.deepEqual([...ds.labels], [0, 2, 1]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function loadArrayDataset(
  path: string,
  opts: ArrayDatasetOptions = {},
): Promise<ArrayDataset> {
  let file = path;
  try {
    if (
      (await denoApi("loadArrayDataset", "pass the .npz bytes to decodeNpz").stat(path)).isDirectory
    ) file = `${path}/data.npz`;
  } catch (e) {
    if (isNotFound(e)) throw new TypeError(`${path} does not exist`);
    throw e;
  }
  return validateArrayDataset(await loadNpz(file, opts), file, opts);
}
