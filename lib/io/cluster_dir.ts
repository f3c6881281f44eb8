/**
 * @file Reading a k-means cluster directory, the output of `deno task cluster` and of the
 * seed's `encode_and_cluster.py`: `cluster_centers.npy` [K, D], `latents.npy` [N, D] and
 * `assignments.csv` (a header with a `cluster` column, one row per latent). Reads files only
 * when called.
 * @module
 */
import { loadNpy } from "../formats/npy.ts";
import { FileFormatError } from "../formats/_bytes.ts";
import { checkInt, denoApi, isNotFound } from "../_util.ts";

const fs = () => denoApi("loadClusterDir", "load the three arrays with decodeNpy");

/**
 * The files a cluster directory must hold.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { CLUSTER_DIR_FILES } from "../../mod.ts";
 * assert.ok(CLUSTER_DIR_FILES.includes("cluster_centers.npy"));
 * ```
 */
export const CLUSTER_DIR_FILES = ["cluster_centers.npy", "latents.npy", "assignments.csv"] as const;

/** Options of {@link loadClusterDir}. */
export interface LoadClusterDirOptions {
  /** Expected number of clusters K (a `RangeError` when the centers disagree). */
  numClusters?: number;
  /** Expected row size D of the data (a `RangeError` when the centers disagree). */
  dim?: number;
}

/** A validated cluster directory. */
export interface ClusterDir {
  /** The directory read. */
  dir: string;
  /** Centers, row-major [K, D]. */
  centers: Float32Array;
  /** K. */
  numClusters: number;
  /** D. */
  dim: number;
  /** N: rows of latents.npy (and of assignments.csv). */
  numSamples: number;
  /** Cluster of each latent [N]. */
  assignments: Int32Array;
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await fs().stat(p)).isFile;
  } catch (e) {
    if (isNotFound(e)) return false;
    throw e;
  }
}

/**
 * Load and check a cluster directory before training: the three files exist, the centers are
 * [K, D] and the latents [N, D] (trailing axes flattened), assignments.csv has N rows with
 * clusters in [0, K), K ≤ N, and K and D match `numClusters` and `dim` when given. Every
 * failure is a `RangeError` naming the directory or file and the mismatched values.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { loadClusterDir, saveNpy } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * await saveNpy(`${dir}/cluster_centers.npy`, { shape: [2, 2], data: new Float32Array([0, 0, 5, 5]) });
 * await saveNpy(`${dir}/latents.npy`, { shape: [3, 2], data: new Float32Array([0, 1, 5, 4, 1, 0]) });
 * await Deno.writeTextFile(`${dir}/assignments.csv`, "index,cluster\n0,0\n1,1\n2,0\n");
 * const c = await loadClusterDir(dir, { dim: 2 });
 * assert.equal(c.numClusters, 2);
 * assert.deepEqual([...c.assignments], [0, 1, 0]);
 * await assert.rejects(loadClusterDir(dir, { numClusters: 3 }), RangeError);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function loadClusterDir(
  dir: string,
  opts: LoadClusterDirOptions = {},
): Promise<ClusterDir> {
  if (typeof dir !== "string" || dir === "") {
    throw new TypeError(`Expected the cluster directory to be a path but found ${String(dir)}`);
  }
  let st: Deno.FileInfo | undefined;
  try {
    st = await fs().stat(dir);
  } catch (e) {
    if (!isNotFound(e)) throw e;
  }
  if (!st?.isDirectory) {
    throw new RangeError(
      `Expected cluster directory ${dir} to be a directory holding ${
        CLUSTER_DIR_FILES.join(", ")
      } (deno task cluster writes one) but it ${st ? "is a file" : "does not exist"}`,
    );
  }
  const path = (f: string) => `${dir.replace(/\/+$/, "")}/${f}`;
  const missing: string[] = [];
  for (const f of CLUSTER_DIR_FILES) if (!(await isFile(path(f)))) missing.push(f);
  if (missing.length) {
    throw new RangeError(
      `Cluster directory ${dir} lacks ${missing.join(", ")} (expected ${
        CLUSTER_DIR_FILES.join(", ")
      }, as deno task cluster writes)`,
    );
  }
  const centers = await loadNpy(path("cluster_centers.npy"));
  const latents = await loadNpy(path("latents.npy"));
  if (centers.shape.length !== 2 || centers.shape[0]! < 1) {
    throw new RangeError(
      `Expected ${path("cluster_centers.npy")} to have shape [K, D] but found [${centers.shape}]`,
    );
  }
  const [K, D] = centers.shape as [number, number];
  const N = latents.shape[0] ?? 0;
  const dl = latents.shape.length >= 2 ? latents.shape.slice(1).reduce((a, b) => a * b, 1) : 0;
  if (latents.shape.length < 2 || dl !== D) {
    throw new RangeError(
      `Expected ${path("latents.npy")} to have shape [N, ${D}] like the centers [${K}, ${D}] ` +
        `but found [${latents.shape}]`,
    );
  }
  if (opts.numClusters !== undefined) {
    checkInt("numClusters", opts.numClusters, 1);
    if (opts.numClusters > N) {
      throw new RangeError(
        `Expected --num-clusters ${opts.numClusters} to be at most the number of samples ` +
          `${N} in ${path("latents.npy")}`,
      );
    }
    if (opts.numClusters !== K) {
      throw new RangeError(
        `Expected ${opts.numClusters} clusters (--num-clusters) but ${
          path("cluster_centers.npy")
        } holds ${K}`,
      );
    }
  }
  if (K > N) {
    throw new RangeError(
      `Cluster directory ${dir} has ${K} centers but only ${N} samples in latents.npy`,
    );
  }
  if (opts.dim !== undefined && opts.dim !== D) {
    throw new RangeError(
      `Expected cluster centers of row size ${opts.dim} (the data) but ${
        path("cluster_centers.npy")
      } has [${K}, ${D}]`,
    );
  }
  const file = path("assignments.csv");
  const lines = (await fs().readTextFile(file)).split(/\r?\n/).filter((l) => l.trim() !== "");
  const header = (lines[0] ?? "").split(",").map((s) => s.trim());
  const col = header.indexOf("cluster");
  if (col < 0) {
    throw new FileFormatError(file, `expected a header with a "cluster" column`);
  }
  const rows = lines.length - 1;
  if (rows !== N) {
    throw new RangeError(
      `Expected ${file} to have ${N} rows (one per latent in latents.npy) but found ${rows}`,
    );
  }
  const assignments = new Int32Array(N);
  for (let i = 0; i < N; i++) {
    const v = Number(lines[i + 1]!.split(",")[col]);
    if (!Number.isInteger(v) || v < 0 || v >= K) {
      throw new RangeError(
        `Expected the cluster in row ${i + 1} of ${file} to be an integer in [0, ${K}) but found "${
          lines[i + 1]!.split(",")[col]
        }"`,
      );
    }
    assignments[i] = v;
  }
  return { dir, centers: centers.data, numClusters: K, dim: D, numSamples: N, assignments };
}
