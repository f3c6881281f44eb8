/**
 * @file `deno task train:anchor` — seed 000's anchor-based flow matching (`train_anchor.py`):
 * the shortcut objective plus λ‖v(x_t, t) − v(e(x1)_t, t)‖² on the flow rows, with
 * e(x1)_t = (1 − t)·x0 + t·e(x1) for the same x0 and t and gradients through both sides.
 * The anchor e(x1) is the class mean of the batch (`--use-label-anchors`, default; the 8
 * Gaussians / board cells on the toys, the classes on Fashion-MNIST) or the nearest k-means
 * centroid from `deno task cluster` (`--cluster-dir`, implying `--use-cluster-centroids`).
 * Metrics add `training/loss_anchor`, `training/anchor_valid_ratio`, and with clusters
 * `training/cluster_distances` (mean squared distance to the centroid) and
 * `training/unique_clusters_used`.
 *
 *   deno task train:anchor --dataset 8gaussians --model.anchor_weight=1.0
 *   deno task cluster --dataset 8gaussians --n-samples 4000 --n-clusters 16 --out-dir /tmp/c
 *   deno task train:anchor --dataset 8gaussians --cluster_dir /tmp/c \
 *     --model.use_cluster_centroids=True --model.use_label_anchors=False
 * @module
 */
import { type FlagSpec, runTask } from "../cli/mod.ts";
import { loadClusterDir, type Tensor, tensor, TOY_LABEL_CLASSES } from "../mod.ts";
import { COMMON_FLAGS, commonConfig, parseTaskFlags } from "./_shortcut.ts";
import { type ShortcutRunResult, trainShortcut } from "./_shortcut_fit.ts";

/**
 * The flags: the common ones plus the anchor settings of `train_anchor.py`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { TRAIN_ANCHOR_FLAGS } from "./train_anchor.ts";
 * assert.equal(TRAIN_ANCHOR_FLAGS.find((f) => f.name === "anchor-weight")?.default, 1);
 * ```
 */
export const TRAIN_ANCHOR_FLAGS = [
  ...COMMON_FLAGS,
  { name: "anchor-weight", type: "number", default: 1, min: 0, help: "λ of the anchor term" },
  { name: "use-label-anchors", type: "bool", default: true, help: "class means as anchors" },
  { name: "use-cluster-centroids", type: "bool", default: false, help: "k-means centroids" },
  {
    name: "num-clusters",
    type: "int",
    default: 100,
    min: 1,
    help: "clusters (checked against --cluster-dir; default: its count)",
  },
  {
    name: "cluster-dir",
    type: "string",
    help: "cluster_centers.npy, latents.npy, assignments.csv",
  },
] as const satisfies readonly FlagSpec[];

const USAGE = `Train a shortcut model with the anchor loss of seed 000 (train_anchor.py).
Example: deno task train:anchor --dataset 8gaussians --model.anchor_weight=1.0`;

/**
 * Run the task (null for --help). Bad anchor settings (a missing or inconsistent
 * --cluster-dir, --use-cluster-centroids without one, labels on unlabelled data) raise a
 * RangeError before anything is written.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { main } from "./train_anchor.ts";
 * await assert.rejects(main(["--use-cluster-centroids"]), /needs --cluster-dir/);
 * ```
 */
export async function main(argv: readonly string[]): Promise<ShortcutRunResult | null> {
  const p = parseTaskFlags(argv, TRAIN_ANCHOR_FLAGS, "train:anchor", USAGE);
  if (!p) return null;
  const { f, given } = p;
  const base = commonConfig("train:anchor", f);
  const clusters = f.useClusterCentroids || f.clusterDir !== undefined;
  if (clusters && f.clusterDir === undefined) {
    throw new RangeError(
      "--use-cluster-centroids needs --cluster-dir (a directory written by deno task cluster)",
    );
  }
  if (!clusters && !f.useLabelAnchors) {
    throw new RangeError("--no-use-label-anchors without --cluster-dir leaves no anchors");
  }
  if (!clusters && base.dataset !== "fashion-mnist" && !(base.dataset in TOY_LABEL_CLASSES)) {
    throw new RangeError(
      `--use-label-anchors needs class labels but --dataset ${base.dataset} has none ` +
        `(labelled: fashion-mnist, ${Object.keys(TOY_LABEL_CLASSES).join(", ")}); ` +
        `use --cluster-dir from deno task cluster --dataset ${base.dataset}`,
    );
  }
  const dim = base.dataShape.reduce((a, b) => a * b, 1);
  const check = (dir: string, k?: number) => loadClusterDir(dir, { numClusters: k, dim });
  const numClusters = clusters && !base.resume
    ? (await check(f.clusterDir!, given.has("numClusters") ? f.numClusters : undefined))
      .numClusters
    : null;
  const cfg = {
    ...base,
    anchorWeight: f.anchorWeight,
    useLabelAnchors: !clusters,
    useClusterCentroids: clusters,
    numClusters: numClusters ?? f.numClusters,
    clusterDir: f.clusterDir ?? null,
  };
  let centroids: Tensor | undefined;
  try {
    return await trainShortcut(cfg, given, async (c) => {
      const weight = c.anchorWeight as number;
      if (!c.useClusterCentroids) return { anchor: { weight, labelClasses: c.labelClasses } };
      const cd = await check(c.clusterDir as string, c.numClusters as number);
      centroids = tensor(cd.centers, [cd.numClusters, cd.dim]);
      return { anchor: { weight, centroids } };
    });
  } finally {
    centroids?.dispose();
  }
}

if (import.meta.main) await runTask("train:anchor", main);
