/**
 * @file `deno task cluster` — encode a dataset and cluster it with k-means (the seed's
 * `encode_and_cluster.py`). Writes to `--out-dir`: `cluster_centers.npy` [k, d] f32,
 * `latents.npy` [n, d] f32 (the encoded samples), `assignments.csv` (`index,cluster`, plus
 * `label` when the data has labels) and `cluster_meta.json`; each file atomically, all after
 * the clustering succeeded.
 *
 *   deno task cluster --dataset fashion-mnist --n-samples 10000 --n-clusters 100 --out-dir cluster_results
 *   deno task cluster --dataset-name fashion-mnist --n_samples 5000 --n_clusters 50 --out_dir /tmp/c
 *   deno task cluster --dataset 8gaussians --n-samples 4000 --n-clusters 8
 *   deno task cluster --dataset npy --data-dir cluster_results --n-clusters 20   # re-cluster latents
 * @module
 */
import {
  atomicWrite,
  encodeImages,
  Generator,
  getBackend,
  kmeans,
  loadAutoencoder,
  loadFashionMnist,
  loadNpy,
  Progress,
  sampleToy,
  saveNpy,
  type Tensor,
  tensor,
  TOY_NAMES,
} from "../mod.ts";
import { type FlagSpec, parseTaskFlags, runTask } from "../cli/mod.ts";

/** Datasets `--dataset` accepts: Fashion-MNIST, the 2-D toys, and `npy` (with `--data-dir`). */
export const CLUSTER_DATASETS = ["fashion-mnist", ...TOY_NAMES, "npy"] as const;

const USAGE = `Encode --n-samples samples of a dataset and cluster them into --n-clusters groups
with k-means (k-means++ init, Lloyd iterations until the inertia changes by less than --tol).
Encoder "pixels" uses the samples themselves: images flattened and scaled to [-1, 1] as in
training, 2-D toys as drawn; a train:autoencoder run or checkpoint encodes Fashion-MNIST
images to its codes (the posterior means μ). Writes cluster_centers.npy [k, d], latents.npy [n, d],
assignments.csv (index,cluster[,label]) and cluster_meta.json to --out-dir. The seed's
spellings (--dataset-name, --n_samples, --out_dir ...) are accepted.
Example: deno task cluster --dataset fashion-mnist --n-samples 10000 --n-clusters 100`;

/**
 * The flags.
 *
 * @example
 * ```ts
 * import { CLUSTER_FLAGS } from "./cluster.ts";
 * console.log(CLUSTER_FLAGS.find((f) => f.name === "n-clusters")?.default); // 100
 * ```
 */
export const CLUSTER_FLAGS = [
  {
    name: "dataset",
    type: "choice",
    choices: CLUSTER_DATASETS,
    default: "fashion-mnist",
    aliases: ["dataset-name"],
  },
  { name: "data-dir", type: "string", help: "IDX folder; npy: .npy file or folder of latents.npy" },
  { name: "split", type: "choice", choices: ["train", "test"], default: "train", help: "split" },
  { name: "n-samples", type: "int", default: 10000, min: 1, help: "samples to encode" },
  { name: "n-clusters", type: "int", default: 100, min: 1, aliases: ["num-clusters"], help: "k" },
  { name: "out-dir", type: "string", aliases: ["output-dir"], help: "default runs/cluster-<time>" },
  { name: "encoder", type: "string", default: "pixels", help: "pixels or a train:autoencoder run" },
  { name: "seed", type: "int", default: 0, min: 0, help: "seed of the toy data and the init" },
  { name: "max-iters", type: "int", default: 100, min: 0, help: "most Lloyd updates" },
  { name: "tol", type: "number", default: 1e-4, min: 0, help: "relative inertia change" },
  { name: "init", type: "choice", choices: ["k-means++", "random"], default: "k-means++" },
] as const satisfies readonly FlagSpec[];

/** What `main` returns: the contents of `cluster_meta.json` and the folder written. */
export interface ClusterResult {
  outDir: string;
  k: number;
  n: number;
  d: number;
  inertia: number;
  iterations: number;
  converged: boolean;
  /** Seconds spent in k-means (init and iterations). */
  seconds: number;
  [key: string]: unknown;
}

type Encoded = { x: Float32Array; n: number; d: number; labels: Float32Array | null; src: string };

/** Load `n` samples and encode them ("pixels": the samples, flattened). */
async function load(
  f: { dataset: string; dataDir?: string; split: string; nSamples: number },
  gen: Generator,
): Promise<Encoded> {
  const n = f.nSamples;
  if (f.dataset === "fashion-mnist") {
    const split = f.split as "train" | "test";
    const ds = await loadFashionMnist({ dir: f.dataDir, split, limit: n });
    if (ds.n < n) {
      throw new RangeError(`Expected --n-samples <= ${ds.n} (fashion-mnist ${split}) but got ${n}`);
    }
    return { x: ds.images, n, d: 784, labels: ds.labels, src: `fashion-mnist ${split}` };
  }
  if (f.dataset === "npy") {
    if (!f.dataDir) throw new RangeError("--dataset npy needs --data-dir (a .npy file or folder)");
    const stat = await Deno.stat(f.dataDir).catch(() => null);
    if (!stat) throw new RangeError(`--data-dir ${f.dataDir} does not exist`);
    const file = stat.isDirectory ? `${f.dataDir}/latents.npy` : f.dataDir;
    const a = await loadNpy(file);
    const rows = a.shape[0] ?? 0, d = a.data.length / Math.max(rows, 1);
    if (a.shape.length < 2 || rows < n) {
      throw new RangeError(`Expected ${file} to be [n, ...] with n >= ${n} but found [${a.shape}]`);
    }
    const lf = `${f.dataDir}/labels.npy`;
    const l = stat.isDirectory && (await Deno.stat(lf).catch(() => null))
      ? await loadNpy(lf)
      : null;
    if (l && (l.shape.length !== 1 || l.shape[0] !== rows)) {
      throw new RangeError(`Expected ${lf} of shape [${rows}] but found [${l.shape}]`);
    }
    return { x: a.data.slice(0, n * d), n, d, labels: l?.data.slice(0, n) ?? null, src: file };
  }
  const t = sampleToy(f.dataset, n, gen);
  const x = await t.data();
  t.dispose();
  return { x, n, d: 2, labels: null, src: f.dataset };
}

/**
 * Run the task (or `null` for `--help`).
 *
 * @example
 * ```ts
 * import { main } from "./cluster.ts";
 * console.log(await main(["--help"])); // prints the usage, then null
 * ```
 */
export async function main(argv: readonly string[]): Promise<ClusterResult | null> {
  const f = parseTaskFlags(argv, CLUSTER_FLAGS, {
    task: "cluster",
    usage: USAGE,
  });
  if (!f) return null;
  if (f.nClusters > f.nSamples) {
    throw new RangeError(
      `Expected --n-clusters (${f.nClusters}) to be at most --n-samples (${f.nSamples})`,
    );
  }
  const time = new Date().toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
  const outDir = (f.outDir ?? `runs/cluster-${time}`).replace(/\/+$/, "") || "/";
  // An autoencoder is read and checked against the data before anything is loaded.
  if (f.encoder !== "pixels" && f.dataset !== "fashion-mnist") {
    throw new RangeError(
      `--encoder ${f.encoder}: an autoencoder encodes images; use --dataset fashion-mnist`,
    );
  }
  const ae = f.encoder === "pixels" ? null : await loadAutoencoder(f.encoder, "--encoder", {
    dataShape: [1, 28, 28],
    dataset: "fashion-mnist",
  });
  const gen = new Generator(f.seed);
  const be = getBackend();
  console.error(`cluster: loading ${f.nSamples} samples of ${f.dataset} (encoder ${f.encoder})`);
  const raw = await load(f, gen).catch((e) => (ae?.model.dispose(), Promise.reject(e)));
  const data = !ae ? raw : {
    ...raw,
    x: await encodeImages(ae.model, raw.x).finally(() => ae.model.dispose()),
    d: ae.config.latentDim,
    src: `${raw.src} encoded by ${ae.path}`,
  };
  const { n, d } = data;
  // Upload in blocks of at most 2^24 floats (64 MiB): one WebGPU binding is often <= 128 MiB.
  const rowsPer = Math.max(1, Math.floor(2 ** 24 / d));
  const blocks: Tensor[] = [];
  for (let s = 0; s < n; s += rowsPer) {
    const e = Math.min(n, s + rowsPer);
    blocks.push(tensor(data.x.subarray(s * d, e * d), [e - s, d], be));
  }
  console.error(
    `cluster: ${n} × ${d} from ${data.src} on ${be.name}; k-means++ → k = ${f.nClusters}`,
  );
  const t0 = performance.now();
  const progress = new Progress(Math.max(1, f.maxIters), { label: "cluster", every: 1 });
  let r;
  try {
    r = await kmeans(blocks.length === 1 ? blocks[0]! : blocks, f.nClusters, {
      generator: gen,
      maxIters: f.maxIters,
      tol: f.tol,
      init: f.init as "k-means++" | "random",
      onIteration: (it) => {
        const m = { inertia: it.inertia, empty: it.emptyClusters };
        if (it.iteration === 0) {
          console.error(
            `cluster: init done in ${((performance.now() - t0) / 1000).toFixed(1)}s, ` +
              `inertia ${it.inertia.toPrecision(6)}`,
          );
        } else progress.update(it.iteration, { ...m, change: it.relativeChange });
      },
    });
  } finally {
    for (const b of blocks) b.dispose();
  }
  const seconds = (performance.now() - t0) / 1000;
  progress.done({ inertia: r.inertia, converged: String(r.converged) });
  const centers = await r.centers.data();
  r.centers.dispose();
  const k = f.nClusters;
  const header = data.labels ? "index,cluster,label" : "index,cluster";
  const lines = [header];
  for (let i = 0; i < n; i++) {
    lines.push(
      data.labels ? `${i},${r.assignments[i]},${data.labels[i]}` : `${i},${r.assignments[i]}`,
    );
  }
  await saveNpy(`${outDir}/cluster_centers.npy`, { shape: [k, d], data: centers });
  await saveNpy(`${outDir}/latents.npy`, { shape: [n, d], data: data.x.subarray(0, n * d) });
  await atomicWrite(`${outDir}/assignments.csv`, lines.join("\n") + "\n");
  const meta = {
    k,
    n,
    d,
    inertia: r.inertia,
    iterations: r.iterations,
    converged: r.converged,
    reseeded: r.reseeded,
    counts: Array.from(r.counts),
    seed: f.seed,
    dataset: f.dataset,
    source: data.src,
    encoder: ae ? ae.path : f.encoder,
    init: f.init,
    tol: f.tol,
    maxIters: f.maxIters,
    backend: be.name,
    seconds: Number(seconds.toFixed(3)),
  };
  await atomicWrite(`${outDir}/cluster_meta.json`, JSON.stringify(meta, null, 2) + "\n");
  const how = r.converged ? "converged" : "max-iters reached";
  console.log(
    `cluster: ${n} samples → ${k} clusters in ${r.iterations} iterations (${how}), ` +
      `inertia ${r.inertia.toPrecision(6)}, ${seconds.toFixed(1)}s -> ${outDir}`,
  );
  return { ...meta, outDir };
}

if (import.meta.main) await runTask("cluster", main);
