/**
 * @file The table of `cfm:table`: its rows, the data floor and pairing statistics, and the
 * markdown rendering (apart from the task so both files stay short).
 * @module
 */
import {
  type CfmDataset,
  Generator,
  getBackend,
  histogramKL,
  otCouple,
  sampleToy,
  w2,
} from "../../mod.ts";
import { fmtMeanStd, meanStd, separated } from "../results.ts";

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

/** Rows grouped by (dataset, coupling), in first-seen order. */
function groups(rows: readonly TableRow[]): Map<string, TableRow[]> {
  const g = new Map<string, TableRow[]>();
  for (const r of rows) {
    const k = `${r.dataset}/${r.ot}`;
    g.set(k, [...(g.get(k) ?? []), r]);
  }
  for (const rs of g.values()) rs.sort((a, b) => a.seed - b.seed);
  return g;
}

const eulerAt = (r: TableRow, k: number, m: "w2" | "kl") =>
  r.euler.find((q) => q.steps === k)?.[m] ?? NaN;

/** Digits for a metric's mean ± std: three decimals, one for NFE-sized numbers. */
const ms = (xs: number[]) => {
  const { mean } = meanStd(xs);
  return fmtMeanStd(xs, Math.abs(mean) >= 10 ? 1 : 3);
};

/**
 * The compact table (dataset × coupling, mean ± std over seeds) of the README: W2 after 1 and
 * the most Euler steps, dopri5 NFE, straightness, and the share of noise rows the coupling uses.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { cfmTable } from "./cfm.ts";
 * const row = (seed: number, w: number) => ({ dataset: "moons" as const, ot: "none", steps: 10,
 *   seed, numSamples: 10, trainSeconds: 1, evalSeconds: 1, finalLoss: 1,
 *   euler: [{ steps: 1, w2: w, kl: 0 }, { steps: 100, w2: w / 2, kl: 0 }],
 *   dopri5: { nfe: 20, w2: 0, kl: 0 }, straightness: 1, lengthRatio: 1, trainCommand: "",
 *   evalCommands: [], backend: "cpu", adapter: "" });
 * assert.match(cfmTable([row(0, 1), row(1, 3)], {}), /\| moons \| none \| 2 \| 2\.000 ± 1\.414 \| 1\.000 ± 0\.707 \|/);
 * ```
 */
export function cfmTable(rows: readonly TableRow[], pairing: Record<string, number>): string {
  const steps = rows[0] ? rows[0].euler.map((e) => e.steps) : [1];
  const few = Math.min(...steps), many = Math.max(...steps);
  const L = [
    `| dataset | coupling | seeds | W2, Euler ${few} | W2, Euler ${many} | dopri5 NFE | ` +
    "straightness S | noise rows used |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const [k, rs] of groups(rows)) {
    const p = pairing[k];
    L.push(
      `| ${rs[0]!.dataset} | ${rs[0]!.ot} | ${rs.length} | ${
        ms(rs.map((r) => eulerAt(r, few, "w2")))
      } | ${ms(rs.map((r) => eulerAt(r, many, "w2")))} | ${ms(rs.map((r) => r.dopri5.nfe))} | ${
        ms(rs.map((r) => r.straightness))
      } | ${p === undefined ? "n/a" : `${(100 * p).toFixed(0)}%`} |`,
    );
  }
  return L.join("\n");
}

/**
 * Generated reading of the table: each coupling against `none` on the same dataset, with a
 * difference called only where the seeds separate it (`separated` in ./cli: the means differ
 * by more than the two standard deviations together).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { cfmSummary } from "./cfm.ts";
 * assert.deepEqual(cfmSummary([]), []);
 * ```
 */
export function cfmSummary(rows: readonly TableRow[]): string[] {
  const g = groups(rows);
  const steps = rows[0] ? rows[0].euler.map((e) => e.steps) : [1];
  const few = Math.min(...steps), many = Math.max(...steps);
  const out: string[] = [];
  const cmp = (name: string, a: number[], b: number[]) => {
    const x = meanStd(a).mean, y = meanStd(b).mean;
    const verdict = separated(a, b) ? (x < y ? "lower" : "higher") : "not separated";
    return `${name} ${f4(x)} vs ${f4(y)} (${verdict})`;
  };
  for (const [k, rs] of g) {
    const [ds, ot] = k.split("/");
    if (ot === "none") continue;
    const base = g.get(`${ds}/none`);
    if (!base) continue;
    const col = (xs: TableRow[], f: (r: TableRow) => number) => xs.map(f);
    out.push(
      `- ${ds}, ${ot} vs none (${rs.length} vs ${base.length} seeds): ` + [
        cmp(
          `W2 at Euler ${few}`,
          col(rs, (r) => eulerAt(r, few, "w2")),
          col(base, (r) => eulerAt(r, few, "w2")),
        ),
        cmp(
          `W2 at Euler ${many}`,
          col(rs, (r) => eulerAt(r, many, "w2")),
          col(base, (r) => eulerAt(r, many, "w2")),
        ),
        cmp("dopri5 NFE", col(rs, (r) => r.dopri5.nfe), col(base, (r) => r.dopri5.nfe)),
        cmp("straightness", col(rs, (r) => r.straightness), col(base, (r) => r.straightness)),
      ].join("; ") + ".",
    );
  }
  return out;
}

/**
 * Render the markdown for all rows measured so far (aggregated over seeds, then every run).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { renderMarkdown } from "./cfm.ts";
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
  const g = groups(rows);
  L.push("# CFM vs OT-CFM on 2-D toys (measured)", "");
  const commits = [...new Set(rows.map((r) => r.commit ?? "unrecorded"))].join(", ");
  L.push(
    "Produced by `deno task cfm:table` (tasks/cfm_table.ts)" +
      (rows.length ? `; rows from commit(s) ${commits}` : "") + ". Source N(0, I); convention " +
      "t = 0 noise, t = 1 data. Same model (VelocityMLP, SiLU), same seeds, same steps for every " +
      "coupling; at each seed the samples and reference data use the same seeds for every row, " +
      "so rows differ only by the coupling. Mean ± sample std over the seeds.",
    "",
  );
  if (r0) {
    L.push(
      `- Backend: \`${r0.backend}\`; adapter: ${r0.adapter}.`,
      `- Training: ${r0.steps} steps, batch ${r0.trainCommand.match(/--batch-size (\d+)/)?.[1]}, ` +
        `model ${r0.trainCommand.match(/--depth (\d+)/)?.[1]}×${
          r0.trainCommand.match(/--hidden (\d+)/)?.[1]
        }, Adam lr ${r0.trainCommand.match(/--lr ([\d.e-]+)/)?.[1]}, grad clip 1, EMA 0.999 ` +
        "with warm-up (`lib/optim` EMA: min(0.999, (1 + n)/(10 + n)); torchcfm's examples use " +
        `a fixed decay), evaluated with EMA weights; seeds ${
          [...new Set(rows.map((r) => r.seed))].sort((a, b) => a - b).join(", ")
        }.`,
      "- `none` = independent pairs (I-CFM, σ = 0); `exact` = OT-CFM with the exact minibatch " +
        "assignment (Hungarian; torchcfm's default `pot.emd`); `argmax` = seed 003's Sinkhorn " +
        "(reg 0.05 on the raw squared-distance cost, 50 iterations) + argmax.",
      `- W2: exact (optimal assignment) between ${r0.numSamples} model samples and ` +
        `${r0.numSamples} fresh data samples. KL: histogram KL(data ‖ model), 25×25 bins over ` +
        "the data's range, 1e-4 added to each model bin.",
      `- Data floor: the same metrics between two independent ${r0.numSamples}-sample draws of the data ` +
        "(what a perfect model would score).",
      "",
    );
  }
  const summary = cfmSummary(rows);
  if (summary.length) {
    L.push(
      "## Summary (generated from the rows below)",
      "",
      ...summary,
      "",
      "A difference is called lower/higher only where the seeds separate it (the means differ " +
        "by more than the two standard deviations together); the data floor shows each " +
        "metric's own sampling noise at this sample size.",
      "",
    );
  }
  L.push("## Over seeds", "", cfmTable(rows, pairing), "");
  for (const [title, k] of [["W2", "w2"], ["Histogram KL", "kl"]] as const) {
    L.push(`## ${title} (lower is better, mean ± std over seeds)`, "");
    L.push(
      `| dataset | coupling | ${
        eulerSteps.map((s) => `Euler ${s}`).join(" | ")
      } | dopri5 | data floor |`,
      `|---|---|${eulerSteps.map(() => "---:").join("|")}|---:|---:|`,
    );
    for (const rs of g.values()) {
      const ds = rs[0]!.dataset;
      const fl = floors[ds] ? f4(floors[ds][k]) : "n/a";
      const cells = eulerSteps.map((s) => ms(rs.map((r) => eulerAt(r, s, k)))).join(" | ");
      L.push(
        `| ${ds} | ${rs[0]!.ot} | ${cells} | ${ms(rs.map((r) => r.dopri5[k]))} | ${fl} |`,
      );
    }
    L.push("");
  }
  L.push("## Every run", "");
  L.push(
    "| dataset | coupling | seed | W2 Euler " + eulerSteps.join(" / ") +
      " | dopri5 NFE | straightness S | length ratio | final loss | train s | eval s | commit |",
    "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
  );
  for (const rs of g.values()) {
    for (const r of rs) {
      L.push(
        `| ${r.dataset} | ${r.ot} | ${r.seed} | ${
          r.euler.map((e) => f4(e.w2)).join(" / ")
        } | ${r.dopri5.nfe} | ${f4(r.straightness)} | ${r.lengthRatio.toFixed(4)} | ${
          f4(r.finalLoss)
        } | ${r.trainSeconds.toFixed(0)} | ${r.evalSeconds.toFixed(0)} | ${
          r.commit ?? "unrecorded"
        } |`,
      );
    }
  }
  L.push(
    "",
    "S = E ∫ ‖(x1 − x0) − v_t‖² dt over the sampled Euler-100 polyline (0 for straight, " +
      "constant-speed paths; Liu et al. 2022 eq. 5); length ratio = path length / displacement. " +
      "Noise rows used: the share of the batch's N(0, I) draws that the coupling actually pairs " +
      "with data (mean over 5 batches). `none` and `exact` are permutations (100%); `argmax` " +
      "may pick one noise row for many data points, which changes the source distribution the " +
      "model is trained to transport from.",
    "",
    "## Commands",
    "",
    "The whole table: `FLOWGPU_BACKEND=webgpu deno task cfm:table --ot-methods none,exact,argmax` " +
      "(seeds 0, 1, 2; rows accumulate in `runs/cfm-table/results.jsonl`, `--render-only` " +
      "rewrites this file from them; `deno task results` runs it with the other tables). Each " +
      "row alone: its training command, then its evaluation commands.",
    "",
    "```sh",
  );
  for (const r of rows) {
    L.push(`# ${r.dataset} / ${r.ot} / seed ${r.seed}`, r.trainCommand, ...r.evalCommands, "");
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

/** The WebGPU adapter's description, or the CPU backend's name. */
export async function adapterName(): Promise<string> {
  if (getBackend().name !== "webgpu") return getBackend().description;
  try {
    const a = await navigator.gpu?.requestAdapter();
    const i = a?.info;
    return i
      ? `${i.description || i.device || "unknown"} (vendor ${i.vendor || "?"}, architecture ${
        i.architecture || "?"
      })`
      : "unknown";
  } catch {
    return "unknown";
  }
}

/** Write the markdown and, beside it, the JSON (rows with their commits, floors, pairing shares). */
export async function writeTable(
  out: string,
  rows: TableRow[],
  floors: Record<string, { w2: number; kl: number }>,
  pairing: Record<string, number>,
): Promise<void> {
  await Deno.writeTextFile(out, renderMarkdown(rows, floors, pairing));
  const json = out.replace(/\.md$/, "") + ".json";
  await Deno.writeTextFile(
    json,
    JSON.stringify({ table: "cfm", rows, floors, pairing }, null, 1) + "\n",
  );
}
