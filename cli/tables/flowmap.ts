/**
 * @file The rows and markdown of `flowmap:table` (apart from the task so both stay short).
 * @module
 */
import { fmtMeanStd, meanStd } from "../results.ts";

/** One `train:flowmap` run of the table. */
export interface FlowMapRow {
  /** `lsd`, `psd` or `esd`. */
  method: string;
  /** Training seed. */
  seed: number;
  /** Training steps. */
  steps: number;
  /** Model (and target) samples per KL. */
  evalSamples: number;
  /** Final KL(target ‖ model) keyed by N (map evaluations). */
  kl: Record<string, number>;
  /** Mean wall time of a step (ms, the last session of the run). */
  stepMs: number;
  /** Wall time of this invocation's part of the run (s). */
  seconds: number;
  /** Whether the run continued an interrupted one. */
  resumed: boolean;
  /** The `deno task train:flowmap` command of the run. */
  command: string;
  /** The commit the run (or its last part) ran on. */
  commit: string;
}

/** Seed 004's reported KL at N = 1, 2, 4, 8, 16 (its table; one run, no spread). */
export const SEED_KL: Record<string, Record<string, number>> = {
  lsd: { 1: 0.4576, 2: 0.4298, 4: 0.3515, 8: 0.2651, 16: 0.2508 },
  psd: { 1: 1.5893, 2: 0.893, 4: 0.5197, 8: 0.3219, 16: 0.2671 },
};

const NS = ["1", "2", "4", "8", "16"];

/**
 * Per N, whether the runs of `method` beat the seed's number: lower by more than their own
 * spread (mean + std below the seed's single value); `null` without a seed number or < 2 runs.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { beatsSeed } from "./flowmap.ts";
 * const row = (seed: number, v: number) => ({ method: "lsd", seed, steps: 1, evalSamples: 1000,
 *   kl: { "1": v }, stepMs: 1, seconds: 1, resumed: false, command: "", commit: "x" });
 * assert.equal(beatsSeed([row(0, 0.40), row(1, 0.42)], "lsd")["1"], true); // 0.41 + 0.014 < 0.4576
 * assert.equal(beatsSeed([row(0, 0.40), row(1, 0.50)], "lsd")["1"], false);
 * ```
 */
export function beatsSeed(
  rows: readonly FlowMapRow[],
  method: string,
): Record<string, boolean | null> {
  const out: Record<string, boolean | null> = {};
  for (const n of NS) {
    const ref = SEED_KL[method]?.[n];
    const xs = rows.filter((r) => r.method === method).map((r) => r.kl[n]!).filter(Number.isFinite);
    if (ref === undefined || xs.length < 2) {
      out[n] = null;
      continue;
    }
    const { mean, std } = meanStd(xs);
    out[n] = mean + std < ref;
  }
  return out;
}

/**
 * The compact table: each method's KL per N (mean ± std over seeds) with the seed's row under it.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { flowMapTable } from "./flowmap.ts";
 * const row = (seed: number, v: number) => ({ method: "lsd", seed, steps: 1, evalSamples: 1000,
 *   kl: { "1": v, "2": v }, stepMs: 1, seconds: 1, resumed: false, command: "", commit: "x" });
 * const md = flowMapTable([row(0, 1), row(1, 3)]);
 * assert.match(md, /\| LSD \(ours\) \| 2 \| 2\.000 ± 1\.414 \| 2\.000 ± 1\.414 \|/);
 * assert.match(md, /\| LSD \(seed 004\) \| 1 \| 0\.4576 \| 0\.4298 \|/);
 * ```
 */
export function flowMapTable(rows: readonly FlowMapRow[]): string {
  const L = [
    `| method | runs | ${NS.map((n) => `N = ${n}`).join(" | ")} |`,
    `| --- | ---: | ${NS.map(() => "---:").join(" | ")} |`,
  ];
  for (const m of ["lsd", "psd", "esd"]) {
    const rs = rows.filter((r) => r.method === m);
    if (!rs.length) continue;
    L.push(
      `| ${m.toUpperCase()} (ours) | ${rs.length} | ${
        NS.map((n) => fmtMeanStd(rs.map((r) => r.kl[n]!).filter(Number.isFinite))).join(" | ")
      } |`,
    );
    const ref = SEED_KL[m];
    if (ref) {
      L.push(
        `| ${m.toUpperCase()} (seed 004) | 1 | ${NS.map((n) => ref[n]!.toFixed(4)).join(" | ")} |`,
      );
    }
  }
  return L.join("\n");
}

/**
 * The markdown page of the table.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { renderFlowMapMarkdown } from "./flowmap.ts";
 * assert.match(renderFlowMapMarkdown([]), /^# Flow maps on the checkerboard/);
 * ```
 */
export function renderFlowMapMarkdown(rows: readonly FlowMapRow[]): string {
  const steps = [...new Set(rows.map((r) => r.steps))].join(", ") || "–";
  const samples = [...new Set(rows.map((r) => r.evalSamples))].join(", ") || "–";
  const commits = [...new Set(rows.map((r) => r.commit))].join(", ") || "–";
  const verdicts: string[] = [];
  for (const m of ["lsd", "psd"]) {
    const b = beatsSeed(rows, m);
    const known = NS.filter((n) => b[n] !== null);
    if (!known.length) continue;
    const won = known.filter((n) => b[n]);
    verdicts.push(
      `${m.toUpperCase()}: below the seed's number beyond our spread at N = ${
        won.length ? won.join(", ") : "none"
      }${
        won.length < known.length ? `; not at N = ${known.filter((n) => !b[n]).join(", ")}` : ""
      }.`,
    );
  }
  const L = [
    "# Flow maps on the checkerboard (seed 004): KL by number of map evaluations",
    "",
    "Produced by `deno task flowmap:table` (tasks/flowmap_table.ts); rows from commit(s) " +
    `${commits}. Each run is \`deno task train:flowmap\` with the seed's setup (MLP 4×256 SiLU ` +
    `on (x, s, t), AdamW lr 2e-4, 1536 diagonal + 512 off-diagonal rows), ${steps} steps; ` +
    `KL(target ‖ model) from 60-bin histograms on [−2.5, 2.5]² with ${samples} samples, ` +
    "bin probabilities normalised (see docs/flowmap_results.md for the estimator and its " +
    "floor). Mean ± sample std over seeds; the seed's numbers are one run each.",
    "",
    flowMapTable(rows),
    "",
    ...(verdicts.length ? [verdicts.join(" "), ""] : []),
    "## Per run",
    "",
    `| method | seed | steps | ${
      NS.map((n) => `N = ${n}`).join(" | ")
    } | ms/step | commit | command |`,
    `| --- | ---: | ---: | ${NS.map(() => "---:").join(" | ")} | ---: | --- | --- |`,
  ];
  for (const r of [...rows].sort((a, b) => a.method.localeCompare(b.method) || a.seed - b.seed)) {
    L.push(
      `| ${r.method} | ${r.seed} | ${r.steps} | ${
        NS.map((n) => (Number.isFinite(r.kl[n]) ? r.kl[n]!.toFixed(4) : "n/a")).join(" | ")
      } | ${r.stepMs.toFixed(0)} | ${r.commit} | \`${r.command}\` |`,
    );
  }
  L.push("");
  return L.join("\n");
}
