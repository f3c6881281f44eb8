/**
 * @file The rows and markdown of `gmm:table` (apart from the task so both stay short).
 * @module
 */
import { fmtMeanStd, meanStd } from "../results.ts";

/** One run of the table: an objective at one seed, its final Fisher divergence per t. */
export interface GmmRow {
  /** `cfm`, `stf`, `stable_vm` or `stable_vm_efficient`. */
  exp: string;
  /** Training seed (also draws the mixture). */
  seed: number;
  /** Training steps. */
  steps: number;
  /** Final Fisher divergence of the EMA model against the exact field, keyed by our t. */
  fisher: Record<string, number>;
  /** The mean over t at every evaluation step. */
  curve: { step: number; mean: number }[];
  /** Held-out points per t in the Fisher divergence. */
  fisherSamples?: number;
  /** Wall time of the run (s). */
  seconds: number;
  /** The `deno task gmm` command of the run. */
  command: string;
  /** The commit the run ran on ("+" = uncommitted changes). */
  commit: string;
}

const NAMES: Record<string, string> = {
  cfm: "CFM (`--exp cfm`)",
  stf: "STF (`--exp stf`)",
  stable_vm: "StableVM (`--exp stable_vm`)",
  stable_vm_efficient: "StableVM, efficient (`--exp stable_vm_efficient`)",
};

const meanOverT = (r: GmmRow) => {
  const v = Object.values(r.fisher);
  return v.reduce((a, b) => a + b, 0) / v.length;
};

/**
 * Paired comparison of `exp` with CFM over the seeds both ran: the per-seed differences
 * (exp − cfm) of the mean-over-t Fisher divergence, and whether `exp` is lower in a way the
 * spread supports (lower at every seed, and the mean difference beyond its std).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { pairedVsCfm } from "./gmm.ts";
 * const row = (exp: string, seed: number, v: number) => ({ exp, seed, steps: 1, fisher: { "0.5": v },
 *   curve: [], seconds: 0, command: "", commit: "x" });
 * const rows = [row("cfm", 0, 1), row("cfm", 1, 2), row("cfm", 2, 3),
 *   row("stf", 0, 0.8), row("stf", 1, 1.7), row("stf", 2, 2.9)];
 * const p = pairedVsCfm(rows, "stf");
 * assert.equal(p.diffs.length, 3);
 * assert.ok(Math.abs(p.diffs[0] + 0.2) < 1e-12);
 * assert.equal(p.lower, true); // −0.2, −0.3, −0.1: mean −0.2, std 0.1
 * ```
 */
export function pairedVsCfm(
  rows: readonly GmmRow[],
  exp: string,
): { diffs: number[]; lower: boolean; higher: boolean } {
  const diffs: number[] = [];
  for (const r of rows.filter((x) => x.exp === exp)) {
    const c = rows.find((x) => x.exp === "cfm" && x.seed === r.seed && x.steps === r.steps);
    if (c) diffs.push(meanOverT(r) - meanOverT(c));
  }
  const { mean, std, n } = meanStd(diffs);
  const beyond = n >= 2 && Math.abs(mean) > std;
  return {
    diffs,
    lower: beyond && diffs.every((d) => d < 0),
    higher: beyond && diffs.every((d) => d > 0),
  };
}

/**
 * The compact table (objective × t, mean ± std over seeds) used in the README and the doc.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { gmmTable } from "./gmm.ts";
 * const row = (seed: number, v: number) => ({ exp: "cfm", seed, steps: 1, fisher: { "0.5": v },
 *   curve: [], seconds: 0, command: "", commit: "x" });
 * assert.match(gmmTable([row(0, 1), row(1, 3)]), /\| CFM \(`--exp cfm`\) \| 2 \| 2\.000 ± 1\.414 \|/);
 * ```
 */
export function gmmTable(rows: readonly GmmRow[]): string {
  const ts = [...new Set(rows.flatMap((r) => Object.keys(r.fisher)))].sort();
  const exps = Object.keys(NAMES).filter((e) => rows.some((r) => r.exp === e));
  const L = [
    `| objective | seeds | ${ts.map((t) => `t = ${t}`).join(" | ")} | mean over t |`,
    `| --- | ---: | ${ts.map(() => "---:").join(" | ")} | ---: |`,
  ];
  for (const e of exps) {
    const rs = rows.filter((r) => r.exp === e);
    L.push(
      `| ${NAMES[e]} | ${rs.length} | ${
        ts.map((t) => fmtMeanStd(rs.map((r) => r.fisher[t]!).filter(Number.isFinite))).join(" | ")
      } | ${fmtMeanStd(rs.map(meanOverT))} |`,
    );
  }
  return L.join("\n");
}

/**
 * One generated sentence per objective on how it compares with CFM, paired by seed.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { gmmVerdict } from "./gmm.ts";
 * assert.equal(gmmVerdict([]), "");
 * ```
 */
export function gmmVerdict(rows: readonly GmmRow[]): string {
  const out: string[] = [];
  for (const e of Object.keys(NAMES).filter((e) => e !== "cfm")) {
    const p = pairedVsCfm(rows, e);
    if (!p.diffs.length) continue;
    const { mean, std } = meanStd(p.diffs);
    const word = p.lower
      ? "lower than CFM at every seed, beyond the spread"
      : p.higher
      ? "higher than CFM at every seed, beyond the spread"
      : "not separated from CFM (the paired difference is within its spread, or changes sign " +
        "across seeds)";
    out.push(
      `${e}: mean-over-t Fisher divergence minus CFM's, paired by seed: ${
        p.diffs.map((d) => (d >= 0 ? "+" : "") + d.toFixed(3)).join(", ")
      } (mean ${mean.toFixed(3)} ± ${std.toFixed(3)}) — ${word}.`,
    );
  }
  return out.join(" ");
}

/**
 * The markdown page of the table.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { renderGmmMarkdown } from "./gmm.ts";
 * assert.match(renderGmmMarkdown([]), /^# Stable Velocity Matching/);
 * ```
 */
export function renderGmmMarkdown(rows: readonly GmmRow[]): string {
  const commits = [...new Set(rows.map((r) => r.commit))].join(", ") || "–";
  const steps = [...new Set(rows.map((r) => r.steps))].join(", ") || "–";
  const pts = [...new Set(rows.map((r) => r.fisherSamples ?? 2000))].join(", ") || "–";
  const L = [
    "# Stable Velocity Matching on SV's toy mixture (seed 002): Fisher divergence by objective",
    "",
    "Produced by `deno task gmm:table` (tasks/gmm_table.ts); rows from commit(s) " +
    `${commits}. Each run: \`deno task gmm\` (SV's gmm_exp.py toy: a 100-mode mixture in 10-D ` +
    "drawn from the seed, AdaLN-Zero MLP 4 blocks × 32 with dropout 0.1, batch 256, a fresh " +
    `2048-sample reference batch every step, the stable target at every t), ${steps} steps, ` +
    "Adam lr 1e-3 (SV: 1e-4 over 20k steps), EMA 0.999 with warm-up (min(0.999, (1 + n)/(10 + " +
    "n)), as `lib/optim`'s EMA; SV: a fixed 0.999), gradient clipping 1 for every objective " +
    "(SV clips CFM only). Score: the Fisher divergence E‖v_θ(x, t) − v*(x, t)‖² of the EMA model " +
    `against the **exact** mixture velocity on ${pts} held-out points per t (our t; SV's ` +
    "0.2–0.5 are our 0.8–0.5; SV estimates v* by STF over 100k samples). Mean ± sample std " +
    "over seeds; each seed has its own mixture, so the paired differences below are the " +
    "sharper comparison.",
    "",
    gmmTable(rows),
    "",
    gmmVerdict(rows),
    "",
    "## Per run",
    "",
    "| objective | seed | " + [...new Set(rows.flatMap((r) => Object.keys(r.fisher)))].sort()
      .map((t) => `t = ${t}`).join(" | ") +
    " | s | commit | command |",
    "| --- | ---: | " + [...new Set(rows.flatMap((r) => Object.keys(r.fisher)))].map(() => "---:")
      .join(" | ") +
    " | ---: | --- | --- |",
  ];
  for (const r of [...rows].sort((a, b) => a.seed - b.seed || a.exp.localeCompare(b.exp))) {
    L.push(
      `| ${r.exp} | ${r.seed} | ${
        Object.keys(r.fisher).sort().map((t) => r.fisher[t]!.toFixed(3)).join(" | ")
      } | ${r.seconds.toFixed(0)} | ${r.commit} | \`${r.command}\` |`,
    );
  }
  L.push("");
  return L.join("\n");
}
