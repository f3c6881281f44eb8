/**
 * @file Training data of the shortcut tasks: the 2-D toys (with class labels for the 8
 * Gaussians and the checkerboard cells, for label anchors) and Fashion-MNIST.
 * @module
 */
import {
  gatherRows,
  type Generator,
  loadFashionMnist,
  sampleToy,
  type Tensor,
  tensor,
} from "../mod.ts";
import type { ShortcutTaskConfig } from "./_shortcut.ts";

/** Toys with class labels (for label anchors): the Gaussian or the board cell. */
export const LABELLED_TOYS: Record<string, number> = { "8gaussians": 8, checkerboard: 8 };

/** Labels of toy points: the nearest of the 8 Gaussians, or the checkerboard cell. */
export function toyLabels(name: string, x: Float32Array): Float32Array {
  const n = x.length / 2, out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const a = x[2 * i]!, b = x[2 * i + 1]!;
    out[i] = name === "8gaussians"
      ? ((Math.round(Math.atan2(b, a) / (Math.PI / 4)) % 8) + 8) % 8
      : ((Math.floor(a) + 2) * 4 + (Math.floor(b) + 2)) >> 1;
  }
  return out;
}

/** A batch x1 and its class labels (when the data has them and `labels` was asked for). */
export interface DataBatch {
  x1: Tensor;
  labels?: Tensor;
}

/** Batches drawn from the run's generator; toy labels are computed only when asked for. */
export async function dataSource(
  c: ShortcutTaskConfig,
): Promise<(b: number, gen: Generator, labels: boolean) => Promise<DataBatch>> {
  if (c.dataset !== "fashion-mnist") {
    const name = c.dataset;
    return async (b, gen, labels) => {
      const x1 = sampleToy(name, b, gen);
      if (!labels || !(name in LABELLED_TOYS)) return { x1 };
      return { x1, labels: tensor(toyLabels(name, await x1.data())) };
    };
  }
  const ds = await loadFashionMnist();
  const row = ds.shape.reduce((a, b) => a * b, 1);
  return (b, gen) => {
    const idx = Array.from(gen.uniformHost(b), (v) => Math.min(ds.n - 1, Math.floor(v * ds.n)));
    return Promise.resolve({
      x1: tensor(gatherRows(ds.images, row, idx), [b, ...ds.shape]),
      labels: tensor(Float32Array.from(idx, (i) => ds.labels[i]!)),
    });
  };
}
