/**
 * @file The table of `cfm:table`: its rows, the data floor and pairing statistics, and the
 * markdown rendering (apart from the task so both files stay short).
 * @module
 */
import { type CfmDataset, Generator, histogramKL, otCouple, sampleToy, w2 } from "../mod.ts";

/** One measured row. */
export interface TableRow {
  dataset: CfmDataset;
  ot: string;
  steps: number;
  seed: number;
  numSamples: number;
  trainSeconds: number;
  evalSeconds: number;
  finalLoss: number;
  euler: { steps: number; w2: number; kl: number }[];
  dopri5: { nfe: number; w2: number; kl: number };
  straightness: number;
  lengthRatio: number;
  trainCommand: string;
  evalCommands: string[];
  backend: string;
  adapter: string;
  /** The commit the row ran on ("+" = uncommitted changes). */
  commit?: string;
}

/** Mean share of distinct source rows the coupling uses per training batch (5 batches). */
async function pairingShare(
  dataset: CfmDataset,
  ot: string,
  batch: number,
  seed: number,
): Promise<number> {
  if (ot === "none" || ot === "exact") return 1;
  const gen = new Generator(seed + 31337);
  let share = 0;
  for (let k = 0; k < 5; k++) {
    const x1 = sampleToy(dataset, batch, gen), x0 = gen.normal([batch, 2]);
    const c = await otCouple(x0, x1, {
      method: ot as "argmax" | "sample",
      reg: 0.05,
      maxIters: 50,
      checkEvery: 50,
      generator: gen,
    });
    share += new Set(c.sourceIndex).size / batch;
    for (const t of [x0, x1, c.x0, c.x1]) t.dispose();
  }
  return share / 5;
}

export async function fillPairing(
  rows: readonly TableRow[],
  out: Record<string, number>,
): Promise<void> {
  for (const r of rows) {
    const b = Number(r.trainCommand.match(/--batch-size (\d+)/)?.[1] ?? 256);
    out[`${r.dataset}/${r.ot}`] ??= await pairingShare(r.dataset, r.ot, b, r.seed);
  }
}

/** Data-vs-data floor: the metrics between two independent draws of the toy. */
export async function floor(
  dataset: CfmDataset,
  n: number,
  seed: number,
): Promise<{ w2: number; kl: number }> {
  const a = sampleToy(dataset, n, new Generator(seed + 1000003));
  const b = sampleToy(dataset, n, new Generator(seed + 2000003));
  const [da, db] = [await a.data(), await b.data()];
  a.dispose();
  b.dispose();
  let lo = Infinity, hi = -Infinity;
  for (const v of da) [lo, hi] = [Math.min(lo, v), Math.max(hi, v)];
  const pad = 0.05 * (hi - lo);
  return {
    w2: await w2(da, db),
    kl: histogramKL(da, db, { bins: 25, range: [lo - pad, hi + pad], eps: 1e-4 }),
  };
}

const f4 = (x: number) => (Number.isFinite(x) ? x.toFixed(x >= 100 ? 1 : x >= 10 ? 2 : 3) : "n/a");

/**
 * Render the markdown for all rows measured so far.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { renderMarkdown } from "./_cfm_table.ts";
 * assert.ok(renderMarkdown([], {}).startsWith("# CFM vs OT-CFM"));
 * ```
 */
export function renderMarkdown(
  rows: readonly TableRow[],
  floors: Record<string, { w2: number; kl: number }>,
  pairing: Record<string, number> = {},
): string {
  const L: string[] = [];
  const r0 = rows[0];
  const eulerSteps = r0 ? r0.euler.map((e) => e.steps) : [];
  L.push("# CFM vs OT-CFM on 2-D toys (measured)", "");
  L.push(
    "Produced by `tasks/cfm_table.ts`. Source N(0, I); convention t = 0 noise, t = 1 data. " +
      "Same model (VelocityMLP, SiLU), same seed, same steps for both couplings; samples and " +
      "reference data use the same seeds for every row, so the rows differ only by the coupling.",
    "",
  );
  if (r0) {
    L.push(
      `- Backend: \`${r0.backend}\`; adapter: ${r0.adapter}.`,
      `- Training: ${r0.steps} steps, batch ${r0.trainCommand.match(/--batch-size (\d+)/)?.[1]}, ` +
        `model ${r0.trainCommand.match(/--depth (\d+)/)?.[1]}×${
          r0.trainCommand.match(/--hidden (\d+)/)?.[1]
        }, Adam lr ${r0.trainCommand.match(/--lr ([\d.e-]+)/)?.[1]}, grad clip 1, EMA 0.999 ` +
        `(evaluated with EMA weights), seed ${r0.seed}.`,
      "- `none` = independent pairs (I-CFM, σ = 0); `exact` = OT-CFM with the exact minibatch " +
        "assignment (Hungarian; torchcfm's default `pot.emd`); `argmax` = seed 003's Sinkhorn " +
        "(reg 0.05 on the max-normalised cost, 50 iterations) + argmax.",
      `- W2: exact (optimal assignment) between ${r0.numSamples} model samples and ` +
        `${r0.numSamples} fresh data samples. KL: histogram KL(data ‖ model), 25×25 bins over ` +
        "the data's range, 1e-4 added to each model bin.",
      `- Data floor: the same metrics between two independent ${r0.numSamples}-sample draws of the data ` +
        "(what a perfect model would score).",
      "",
    );
  }
  const byDs = new Map<string, TableRow[]>();
  for (const r of rows) byDs.set(r.dataset, [...(byDs.get(r.dataset) ?? []), r]);
  const summary: string[] = [];
  for (const [ds, rs] of byDs) {
    const base = rs.find((r) => r.ot === "none");
    if (!base) continue;
    for (const r of rs) {
      if (r === base) continue;
      const e = (x: TableRow, k: number) => x.euler.find((q) => q.steps === k);
      const few = Math.min(...eulerSteps), many = Math.max(...eulerSteps);
      const ratio = (a: number, b: number) => (b > 0 ? `${(a / b).toFixed(2)}×` : "n/a");
      summary.push(
        `- ${ds}, ${r.ot} vs none: W2 at Euler ${few} ${f4(e(r, few)?.w2 ?? NaN)} vs ${
          f4(e(base, few)?.w2 ?? NaN)
        } (${ratio(e(r, few)?.w2 ?? NaN, e(base, few)?.w2 ?? NaN)}), at Euler ${many} ${
          f4(e(r, many)?.w2 ?? NaN)
        } vs ${f4(e(base, many)?.w2 ?? NaN)}; dopri5 NFE ${r.dopri5.nfe} vs ${base.dopri5.nfe}; ` +
          `straightness ${f4(r.straightness)} vs ${f4(base.straightness)}; ` +
          `training ${r.trainSeconds.toFixed(0)} s vs ${base.trainSeconds.toFixed(0)} s.`,
      );
    }
  }
  if (summary.length) {
    L.push(
      "## Summary (generated from the rows below)",
      "",
      ...summary,
      "",
      "Seed 003 claims OT gives straighter paths and better few-step samples: compare the " +
        "Euler 1–4 columns, dopri5 NFE and S. One training seed and one evaluation seed per " +
        "row, no error bars; the data floor shows each metric's own sampling noise at this " +
        "sample size.",
      "",
    );
  }
  for (const [title, k] of [["W2", "w2"], ["Histogram KL", "kl"]] as const) {
    L.push(`## ${title} (lower is better)`, "");
    L.push(
      `| dataset | coupling | ${
        eulerSteps.map((s) => `Euler ${s}`).join(" | ")
      } | dopri5 | data floor |`,
      `|---|---|${eulerSteps.map(() => "---:").join("|")}|---:|---:|`,
    );
    for (const [ds, rs] of byDs) {
      for (const r of rs) {
        const fl = floors[ds] ? f4(floors[ds][k]) : "n/a";
        const cells = r.euler.map((e) => f4(e[k])).join(" | ");
        L.push(`| ${ds} | ${r.ot} | ${cells} | ${f4(r.dopri5[k])} | ${fl} |`);
      }
    }
    L.push("");
  }
  L.push("## Paths and cost", "");
  L.push(
    "| dataset | coupling | dopri5 NFE (atol = rtol = 1e-5) | straightness S (Euler 100) | length ratio | distinct noise rows per batch | final loss | train s | eval s |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|",
  );
  for (const [ds, rs] of byDs) {
    for (const r of rs) {
      L.push(
        `| ${ds} | ${r.ot} | ${r.dopri5.nfe} | ${f4(r.straightness)} | ${
          r.lengthRatio.toFixed(4)
        } | ${
          pairing[`${ds}/${r.ot}`] === undefined
            ? "n/a"
            : `${(100 * pairing[`${ds}/${r.ot}`]!).toFixed(0)}%`
        } | ${f4(r.finalLoss)} | ${r.trainSeconds.toFixed(0)} | ${r.evalSeconds.toFixed(0)} |`,
      );
    }
  }
  L.push(
    "",
    "S = E ∫ ‖(x1 − x0) − v_t‖² dt over the sampled Euler-100 polyline (0 for straight, " +
      "constant-speed paths; Liu et al. 2022 eq. 5); length ratio = path length / displacement. " +
      "Distinct noise rows per batch: the share of the batch's N(0, I) draws that the coupling " +
      "actually pairs with data (mean over 5 batches). `none` and `exact` are permutations " +
      "(100%); `argmax` may pick one noise row for many data points, which changes the source " +
      "distribution the model is trained to transport from.",
    "",
    "## Commands",
    "",
    "Each row is reproduced by its training command followed by its evaluation commands " +
      "(prefix every command with `FLOWGPU_BACKEND=webgpu` to use the WebGPU adapter). The " +
      "whole table: `FLOWGPU_BACKEND=webgpu deno task cfm:table` (none and exact on three toys) " +
      "followed by `FLOWGPU_BACKEND=webgpu deno task cfm:table --datasets 8gaussians,moons " +
      "--ot-methods argmax` (rows accumulate in `runs/cfm-table/results.jsonl`; " +
      "`--render-only` rewrites this file from it).",
    "",
    "```sh",
  );
  for (const r of rows) {
    L.push(`# ${r.dataset} / ${r.ot}`, r.trainCommand, ...r.evalCommands, "");
  }
  L.push("```", "");
  const total = rows.reduce((a, r) => a + r.trainSeconds + r.evalSeconds, 0);
  L.push(
    `Total measured wall time (training + evaluation of all rows): ${total.toFixed(0)} s ` +
      `(${(total / 60).toFixed(1)} min) on a 2-core machine shared with other jobs.`,
    "",
  );
  return L.join("\n");
}
