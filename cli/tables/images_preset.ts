/**
 * @file The rows and markdown of `images:preset`: `deno task train:images` at its defaults
 * (the flat-pixel MLP, or `--model dit-tiny`'s DiT preset), over seeds, against issue 14's bar
 * for a preset — finished within 30 minutes on the 2-core CPU and ≥ 80% of its guided samples
 * recognised as their intended class by the shipped classifier.
 * @module
 */
import { FASHION_MNIST_CLASSES as CLASSES } from "../../mod.ts";
import { fmtMeanStd, meanStd } from "../results.ts";
import type { ImageRunScores } from "./images.ts";

/**
 * The presets `images:preset` runs: `train:images --model velocity-mlp`, the default DiT, and
 * `--latents` (the MLP preset on a `train:autoencoder` run's codes).
 */
export const PRESET_MODELS = ["velocity-mlp", "dit-tiny", "latents"] as const;

const NAMES: Record<string, string> = {
  "velocity-mlp": "MLP 3 × 512 (`--model velocity-mlp`)",
  "dit-tiny": "DiT 128 × 4, patch 4 (the default)",
  latents: "MLP 3 × 512 on the VAE's 16-D codes (`--latents`)",
};

/** Issue 14's bar for the preset: wall time (min) and class agreement. */
export const PRESET_BAR = { minutes: 30, classAcc: 0.8 } as const;

/** One `train:images` run of the table (its wall time is end to end: training, grid, scores). */
export interface PresetRow extends ImageRunScores {
  /** `velocity-mlp`, `dit-tiny` or `latents`. */
  model: string;
  /** With `latents`: the `train:autoencoder` run whose codes it trained on. */
  autoencoder?: string;
}

const of = (rows: readonly PresetRow[], m: string) => rows.filter((r) => r.model === m);
const pct = (xs: number[]) => fmtMeanStd(xs.map((x) => 100 * x), 1);

/**
 * Whether every seed of a model met the bar (a resumed run's wall time is not known in full,
 * so it cannot vouch for the time).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { meetsBar } from "./images_preset.ts";
 * const r = { classAcc: 0.85, seconds: 1700, resumed: false };
 * assert.equal(meetsBar([r, r, r]), true);
 * assert.equal(meetsBar([r, { ...r, classAcc: 0.79 }, r]), false);
 * assert.equal(meetsBar([r, { ...r, seconds: 1801 }, r]), false);
 * assert.equal(meetsBar([r, { ...r, resumed: true }, r]), false);
 * ```
 */
export function meetsBar(rows: readonly Pick<PresetRow, "classAcc" | "seconds" | "resumed">[]) {
  return rows.length > 0 &&
    rows.every((r) =>
      !r.resumed && r.seconds <= 60 * PRESET_BAR.minutes && r.classAcc >= PRESET_BAR.classAcc
    );
}

/**
 * The summary: per model, mean ± sample std over seeds of class agreement (and its worst
 * seed), FD and wall time (and its slowest seed), and whether every seed met the bar.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { presetTable } from "./images_preset.ts";
 * const row = (seed: number, classAcc: number) => ({ model: "dit-tiny", seed, steps: 2500,
 *   evalSamples: 500, evalSteps: 25, cfgScale: 3, fd: 100 + seed, fdRealTrainTest: 29,
 *   classAcc, classAccPerClass: [], seconds: 1500 + 60 * seed, resumed: false,
 *   backend: "wasm", command: "", commit: "x" });
 * const t = presetTable([row(0, 0.8), row(1, 0.84), row(2, 0.82)]);
 * assert.match(t, /\| DiT 128 × 4, patch 4 \(the default\) \| 3 \| 2500 \| 82\.0 ± 2\.0 \| 80\.0 \| 101\.00 ± 1\.00 \| 29\.00 \| 26\.0 ± 1\.0 \| 27\.0 \| yes \|/);
 * assert.match(presetTable([]), /no rows yet/);
 * ```
 */
export function presetTable(rows: readonly PresetRow[]): string {
  if (!rows.length) {
    return "The table has no rows yet: `deno task images:preset` makes them (rows accumulate " +
      "in `docs/images_preset.json`).";
  }
  const L = [
    "| network | seeds | steps | class agreement (%) | worst seed (%) | FD | FD floor | wall time (min) | slowest (min) | every seed ≤ 30 min and ≥ 80% |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
  ];
  for (const m of PRESET_MODELS) {
    const rs = of(rows, m);
    if (!rs.length) continue;
    const min = rs.map((r) => r.seconds / 60);
    L.push(
      `| ${NAMES[m]} | ${rs.length} | ${rs[0]!.steps} | ${pct(rs.map((r) => r.classAcc))} | ${
        (100 * Math.min(...rs.map((r) => r.classAcc))).toFixed(1)
      } | ${fmtMeanStd(rs.map((r) => r.fd), 2)} | ${
        meanStd(rs.map((r) => r.fdRealTrainTest)).mean.toFixed(2)
      } | ${fmtMeanStd(min, 1)} | ${Math.max(...min).toFixed(1)} | ${
        meetsBar(rs) ? "yes" : "no"
      } |`,
    );
  }
  return L.join("\n");
}

/**
 * The markdown page of the table.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { renderPresetMarkdown } from "./images_preset.ts";
 * assert.match(renderPresetMarkdown([]), /^# `deno task train:images` over seeds/);
 * ```
 */
export function renderPresetMarkdown(rows: readonly PresetRow[], dir = "docs"): string {
  const commits = [...new Set(rows.map((r) => r.commit))].join(", ") || "–";
  const backends = [...new Set(rows.map((r) => r.backend))].join(", ") || "–";
  const L = [
    "# `deno task train:images` over seeds",
    "",
    "Produced by `deno task images:preset` (tasks/images_preset.ts); rows from commit(s) " +
    `${commits}, backend(s) ${backends}. Each row is one \`deno task train:images --model M ` +
    "--seed N` at the preset's defaults, end to end on the 2-core CPU: training, the " +
    "CFG class grid, then FD and class agreement of the guided EMA samples by the shipped " +
    "classifier (`assets/classifier_fmnist.safetensors`; FD on its penultimate features, " +
    "**not the Inception FID**). Issue 14's bar for the preset: done within 30 minutes and " +
    "≥ 80% class agreement. Mean ± sample std over seeds.",
    "",
    presetTable(rows),
    "",
  ];
  if (!rows.length) return L.join("\n");
  L.push("## Class agreement per class (mean over seeds)", "");
  L.push(
    `| network | ${CLASSES.join(" | ")} |`,
    `| --- | ${CLASSES.map(() => "---:").join(" | ")} |`,
  );
  for (const m of PRESET_MODELS) {
    const rs = of(rows, m);
    if (!rs.length) continue;
    const k = (i: number) => meanStd(rs.map((r) => r.classAccPerClass[i] ?? NaN)).mean.toFixed(3);
    L.push(`| ${m} | ${CLASSES.map((_, i) => k(i)).join(" | ")} |`);
  }
  L.push("");
  for (const r of rows.filter((r) => r.seed === 0 && r.grid)) {
    const p = r.grid!.startsWith(`${dir}/`) ? r.grid!.slice(dir.length + 1) : r.grid!;
    L.push(
      `${r.model}, seed 0 (rows: T-shirt/top … ankle boot):`,
      "",
      `![${r.model} class grid, seed 0](${p})`,
      "",
    );
  }
  L.push(
    "## Per run",
    "",
    "| network | seed | class agreement | FD | FD floor | wall time (s) | backend | commit | command |",
    "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |",
  );
  for (const r of [...rows].sort((a, b) => a.model.localeCompare(b.model) || a.seed - b.seed)) {
    L.push(
      `| ${r.model} | ${r.seed} | ${r.classAcc.toFixed(3)} | ${r.fd.toFixed(2)} | ${
        r.fdRealTrainTest.toFixed(2)
      } | ${r.seconds.toFixed(0)}${
        r.resumed ? " †" : ""
      } | ${r.backend} | ${r.commit} | \`${r.command}\` |`,
    );
  }
  L.push("", "† resumed: the wall time covers the last session only.", "");
  return L.join("\n");
}
