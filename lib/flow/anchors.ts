/**
 * @file Anchors e(x1) for seed 000's anchor loss (LFM `targets_shortcut_LFM_anchor.py`): the
 * class mean of the minibatch, or the nearest precomputed k-means centroid.
 * @module
 */
import { type Tensor, tidy } from "../tensor.ts";
import {
  argmin,
  clamp,
  flatten2d,
  gather,
  greater,
  greaterEqual,
  matmul,
  max,
  maximum,
  min,
  oneHot,
  pairwiseSqDist,
  reshape,
  sum,
  transpose,
  where,
} from "../ops/mod.ts";
import { checkInt, fmtShape } from "../_util.ts";

/** Anchors of a batch and which rows have one. */
export interface Anchors {
  /** e(x1) [N, ...], shaped like x1 (x1 itself where `valid` is 0). */
  anchors: Tensor;
  /** 1 where the row has an anchor, else 0 [N]. */
  valid: Tensor;
}

/**
 * Class-mean anchors (LFM's `use_label_anchors`): e(x1_i) is the mean of the batch rows with
 * x1_i's label. A row is valid when its class has at least two members in the batch (a class
 * of one is its own mean, which constrains nothing) and its label is a real class (< K; the
 * null label K of dropped-out labels has no anchor). Invalid rows get x1 itself. Two
 * matmuls with the one-hot matrix; nothing is read back.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { labelAnchors, tensor } from "../../mod.ts";
 * const { anchors, valid } = labelAnchors(tensor([[0, 0], [2, 2], [5, 5]]), tensor([1, 1, 0]), 2);
 * assert.deepEqual([...await anchors.data()], [1, 1, 1, 1, 5, 5]);
 * assert.deepEqual([...await valid.data()], [1, 1, 0]);
 * ```
 */
export function labelAnchors(x1: Tensor, labels: Tensor, numClasses: number): Anchors {
  const k = checkInt("numClasses", numClasses, 1);
  const n = x1.shape[0];
  if (x1.rank < 2 || n === undefined) {
    throw new RangeError(`Expected x1 of shape [N, ...] but found ${fmtShape(x1.shape)}`);
  }
  if (labels.size !== n) {
    throw new RangeError(`Expected labels of shape [${n}] but found ${fmtShape(labels.shape)}`);
  }
  return tidy(() => {
    const oh = oneHot(labels, k); // [N, K]; a label ≥ K gives a zero row
    const counts = sum(oh, 0); // [K]
    const means = matmul(transpose(oh), flatten2d(x1)).div(reshape(maximum(counts, 1), [k, 1]));
    const own = reshape(matmul(oh, reshape(counts, [k, 1])), [n]); // members of the row's class
    const valid = greaterEqual(own, 2);
    const mask = reshape(valid, [n, ...new Array<number>(x1.rank - 1).fill(1)]);
    const anchors = where(mask, reshape(matmul(oh, means), x1.shape), x1);
    return { anchors, valid };
  });
}

/** The nearest centroid of each row. */
export interface NearestCentroid extends Anchors {
  /** Index of the nearest centroid [N] (f32 integers). */
  index: Tensor;
  /** Squared distance to it [N]. */
  distance: Tensor;
  /** Number of distinct centroids used by the batch (a scalar). */
  used: Tensor;
}

/**
 * Nearest-centroid anchors (LFM's `use_cluster_centroids`): e(x1_i) = argmin_c ‖x1_i − c‖²
 * over `centroids` [K, ...] (rows compared flattened, as LFM does). Every row is valid.
 * `distance` is the squared distance (LFM's `cluster_distances` averages it) and `used` the
 * number of distinct centroids chosen (LFM's `unique_clusters_used`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nearestCentroid, tensor } from "../../mod.ts";
 * const r = nearestCentroid(tensor([[0, 1], [9, 9], [1, 0]]), tensor([[0, 0], [10, 10], [5, 5]]));
 * assert.deepEqual([...await r.index.data()], [0, 1, 0]);
 * assert.deepEqual([...await r.distance.data()], [1, 2, 1]);
 * assert.equal(await r.used.item(), 2);
 * ```
 */
export function nearestCentroid(x1: Tensor, centroids: Tensor): NearestCentroid {
  const n = x1.shape[0], k = centroids.shape[0];
  const d = x1.size / (n || 1), dc = centroids.size / (k || 1);
  if (x1.rank < 2 || !n || centroids.rank < 2 || !k || d !== dc) {
    throw new RangeError(
      `Expected x1 [N, ...] and centroids [K, ...] with the same row size but found ${
        fmtShape(x1.shape)
      } and ${fmtShape(centroids.shape)}`,
    );
  }
  return tidy(() => {
    const cf = flatten2d(centroids);
    const d2 = pairwiseSqDist(flatten2d(x1), cf); // [N, K]
    const index = argmin(d2, 1);
    const distance = clamp(min(d2, 1), 0);
    const anchors = reshape(gather(cf, index, 0), x1.shape);
    const used = sum(greater(max(oneHot(index, k), 0), 0));
    const valid = greaterEqual(distance, 0); // all ones
    return { anchors, valid, index, distance, used };
  });
}
