/**
 * @file Loading a task's training data with a progress line: Fashion-MNIST takes seconds to
 * decompress, so it says so before and after; toy data are generated on the fly, silently.
 * @module
 */
import { type CfmData, cfmData, type CfmDataOptions, type CfmDataset, withPhase } from "../mod.ts";

/**
 * {@linkcode cfmData}, announcing a dataset that is read from disk (`task: loading …` then
 * `… done in 1.2s`) on stderr.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { loadData } from "./_data.ts";
 * const d = await loadData("train:cfm", "moons", 0); // a toy: no lines
 * assert.deepEqual(d.shape, [2]);
 * ```
 */
export function loadData(
  task: string,
  dataset: CfmDataset,
  seed: number,
  opts: CfmDataOptions = {},
): Promise<CfmData> {
  if (dataset !== "fashion-mnist") return cfmData(dataset, seed, opts);
  const what = opts.autoencoder ? "loading and encoding fashion-mnist" : "loading fashion-mnist";
  return withPhase(task, what, () => cfmData(dataset, seed, opts));
}
