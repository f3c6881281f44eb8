/**
 * @file `train:stablevm --latents` (issue 14, item 6; seed 001's latent flow matching): the
 * flag, its checks, and the training rows, Fashion-MNIST encoded once by a
 * `train:autoencoder` run (normalised codes), decoded back to images for the class grid and
 * the scores (tasks/_stablevm_final.ts). The run's config records the autoencoder
 * (`LatentSpec`), and a resumed run re-opens it and refuses one retrained since.
 * @module
 */
import {
  type LabelledSet,
  latentLabelledSet,
  type LatentSpec,
  type LoadedAutoencoder,
  loadFashionMnist,
  withLatents,
} from "../mod.ts";
import type { FlagSpec } from "../cli/mod.ts";

/** The flag (part of `TRAIN_STABLEVM_FLAGS`). */
export const STABLEVM_LATENT_FLAGS = [
  {
    name: "latents",
    type: "string",
    help: "train on this train:autoencoder run's codes of Fashion-MNIST (the AdaLN-Zero MLP)",
  },
] as const satisfies readonly FlagSpec[];

/**
 * Check `--latents` against the other flags (before anything is read): the codes are
 * Fashion-MNIST's (`--data-dir` defaults to it and may not name other data) and flat vectors
 * (`--model adaln-mlp`, no REPA, whose encoder reads images). Returns the config's `dataDir`
 * and `latents`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { resolveLatentFlag } from "./_stablevm_latent.ts";
 * const f = { latents: "runs/ae", model: "adaln-mlp", useProjLoss: false };
 * assert.deepEqual(resolveLatentFlag(f), { dataDir: "fashion-mnist", latents: "runs/ae" });
 * assert.throws(() => resolveLatentFlag({ ...f, model: "dit-tiny" }), /--latents runs\/ae: .*--model adaln-mlp/);
 * ```
 */
export function resolveLatentFlag(f: {
  latents?: string;
  dataDir?: string;
  model: string;
  useProjLoss: boolean;
}): { dataDir: string | null; latents: string | null } {
  if (f.latents === undefined) return { dataDir: f.dataDir ?? null, latents: null };
  const flag = `--latents ${f.latents}`;
  if (f.dataDir !== undefined && f.dataDir !== "fashion-mnist") {
    throw new RangeError(
      `${flag}: the codes are of Fashion-MNIST images; drop --data-dir ${f.dataDir} (or give ` +
        `--data-dir fashion-mnist)`,
    );
  }
  if (f.model !== "adaln-mlp") {
    throw new RangeError(
      `${flag}: codes are flat vectors for --model adaln-mlp; ${f.model} needs images`,
    );
  }
  if (f.useProjLoss) {
    throw new RangeError(`${flag}: --use-proj-loss aligns a DiT's image tokens, not codes`);
  }
  return { dataDir: "fashion-mnist", latents: f.latents };
}

/**
 * The rows of a latent run: the autoencoder (`latents` as given, or as a resumed run
 * recorded it), the first `limit` Fashion-MNIST training images encoded with it, and the
 * record to store in the config. Dispose `ae.model` when the run is done.
 */
export async function latentRows(
  latents: LatentSpec | string,
  limit: number,
): Promise<{ data: LabelledSet; spec: LatentSpec; ae: LoadedAutoencoder }> {
  const { config, ae } = await withLatents({
    dataset: "fashion-mnist",
    model: "adaln-mlp",
    dataShape: [1, 28, 28],
    latents,
  });
  try {
    const ds = await loadFashionMnist({ limit });
    return { data: await latentLabelledSet(ae!, ds), spec: config.latents as LatentSpec, ae: ae! };
  } catch (e) {
    ae!.model.dispose();
    throw e;
  }
}
