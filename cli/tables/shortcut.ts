/**
 * @file The results of `shortcut:table`: rows, mean ± std aggregation and the markdown.
 * @module
 */
import { type CfmDataset, Generator, sampleToy, w2 } from "../../mod.ts";

/**
 * The variants, in table order.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { VARIANTS } from "./shortcut.ts";
 * assert.equal(VARIANTS.length, 4);
 * ```
 */
export const VARIANTS = ["shortcut", "anchor-labels", "anchor-clusters", "locality"] as const;

/**
 * Step counts N of the few-step columns.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { STEPS } from "./shortcut.ts";
 * assert.deepEqual(STEPS, [1, 2, 4, 8]);
 * ```
 */
export const STEPS = [1, 2, 4, 8];

/**
 * Where the tables depart from SC's settings, and why.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { SC_DEVIATIONS } from "./shortcut.ts";
 * assert.match(SC_DEVIATIONS, /SC: 1e-4 and 0\.999/);
 * ```
 */
export const SC_DEVIATIONS = "Deviations from SC: lr and EMA decay are the flags above (SC: " +
  "1e-4 and 0.999), since SC's settings need many more steps than a CPU adapter affords here " +
  "(the d ≥ 1/8 shortcut levels are learned from the EMA teacher level by level). Gradients " +
  "are not clipped (SC).";

/** One trained-and-evaluated run. */
export interface Row {
  variant: string;
  seed: number;
  /** Few-step W2 by N (2-D toys). */
  w2?: Record<number, number>;
  /** Few-step FD by N (Fashion-MNIST; classifier features, not the Inception FID). */
  fd?: Record<number, number>;
  /** Class agreement of the N-step samples with their labels, by N (Fashion-MNIST). */
  classAcc?: Record<number, number>;
  straightness: number;
  trainSeconds: number;
  finalLoss: number;
  command: string;
  /** Commit the run was made at (with "+" when the tree had uncommitted changes). */
  commit: string;
}

const meanStd = (xs: number[]) => {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  const v = xs.length > 1 ? xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1) : 0;
  return [m, Math.sqrt(v)] as const;
};
const fmt = (xs: number[], d = 3) => {
  const [m, s] = meanStd(xs);
  return xs.length > 1 ? `${m.toFixed(d)} ± ${s.toFixed(d)}` : m.toFixed(d);
};

/** Generated reading of the table: each variant's mean W2 difference from `shortcut`. */
function summary(rows: readonly Row[]): string[] {
  const of = (v: string, N: number) => rows.filter((r) => r.variant === v).map((r) => r.w2![N]!);
  if (!of("shortcut", 1).length) return [];
  const parts: string[] = [];
  let worst = 0, spread = 0;
  for (const v of VARIANTS.filter((v) => v !== "shortcut" && of(v, 1).length)) {
    const d = STEPS.map((N) => meanStd(of(v, N))[0] - meanStd(of("shortcut", N))[0]);
    worst = Math.max(worst, ...d.map(Math.abs));
    spread = Math.max(spread, ...STEPS.map((N) => meanStd(of(v, N))[1]));
    parts.push(`${v} ${d.map((x) => (x >= 0 ? "+" : "") + x.toFixed(3)).join(" / ")}`);
  }
  spread = Math.max(spread, ...STEPS.map((N) => meanStd(of("shortcut", N))[1]));
  if (!parts.length) return [];
  return [
    `Mean W2 difference from \`shortcut\` at N = ${STEPS.join(" / ")}: ${parts.join("; ")}. ` +
    `The largest is ${worst.toFixed(3)}, against seed-to-seed std up to ${spread.toFixed(3)}` +
    (worst < spread
      ? ": at this scale no locality-aware variant separates from the plain shortcut model."
      : "."),
    "",
  ];
}

/**
 * The markdown for the rows (grouped by variant; `untrained` rows are the baseline).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { renderMarkdown } from "./shortcut.ts";
 * const row = { variant: "shortcut", seed: 0, w2: { 1: 1, 2: 1, 4: 1, 8: 1 }, straightness: 0.5,
 *   trainSeconds: 10, finalLoss: 3, command: "deno task train:shortcut", commit: "abc" };
 * const md = renderMarkdown([row, { ...row, seed: 1, w2: { 1: 3, 2: 1, 4: 1, 8: 1 } }], {});
 * assert.match(md, /\| shortcut \| 2 \| 2\.000 ± 1\.414 \|/);
 * ```
 */
export function renderMarkdown(rows: readonly Row[], meta: Record<string, string>): string {
  const L = ["# Shortcut models with locality-aware losses on a 2-D toy (measured)", ""];
  L.push(
    `Produced by \`deno task shortcut:table\` (tasks/shortcut_table.ts); rows measured at ` +
      `commit ${[...new Set(rows.map((r) => r.commit))].map((c) => `\`${c}\``).join(", ")} ` +
      `("+": uncommitted changes), rendered at \`${meta.commit}\`; backend ` +
      `\`${meta.backend}\`. ${meta.settings}`,
    "",
    "Few-step quality: exact W2 (optimal assignment) between the EMA model's samples after N " +
      "Euler steps of size d = 1/N (dtBase = log2 N; the same noise for every N and every row) " +
      "and fresh data, lower is better. Straightness: S = E Σ_k Δt‖(x1 − x0) − v_k‖² of the " +
      "128-step trajectories (dtBase = 7, the flow the model learned); 0 is a straight path. " +
      "`untrained` is each seed's model before training (the same initial weights as every " +
      "variant). Mean ± sample std over the seeds.",
    "",
    `| variant | seeds | ${STEPS.map((N) => `W2 @ ${N}`).join(" | ")} | straightness | train s |`,
    `|---|---|${STEPS.map(() => "---|").join("")}---|---|`,
  );
  const order = ["untrained", ...VARIANTS];
  const groups = order.map((v) => [v, rows.filter((r) => r.variant === v)] as const)
    .filter(([, rs]) => rs.length > 0);
  for (const [v, rs] of groups) {
    const cells = STEPS.map((N) => fmt(rs.map((r) => r.w2![N]!)));
    const secs = v === "untrained" ? "–" : fmt(rs.map((r) => r.trainSeconds), 0);
    L.push(
      `| ${v} | ${rs.length} | ${cells.join(" | ")} | ${
        fmt(rs.map((r) => r.straightness))
      } | ${secs} |`,
    );
  }
  L.push(
    "",
    `Data floor: W2 between two independent draws of ${meta.n} points: ${meta.floor}.`,
    "",
    ...summary(rows),
    "`train s` is wall-clock time on a machine shared with other jobs; the anchor and " +
      "locality variants evaluate the network on 1 + 7/8 times the batch rows per step.",
    "",
  );
  L.push(
    "## Per run",
    "",
    "| variant | seed | " + STEPS.map((N) => `W2 @ ${N}`).join(" | ") +
      " | straightness | final loss | command |",
    `|---|---|${STEPS.map(() => "---|").join("")}---|---|---|`,
  );
  for (const r of rows) {
    L.push(
      `| ${r.variant} | ${r.seed} | ${STEPS.map((N) => r.w2![N]!.toFixed(3)).join(" | ")} | ` +
        `${r.straightness.toFixed(3)} | ${
          Number.isFinite(r.finalLoss) ? r.finalLoss.toFixed(3) : "–"
        } | \`${r.command}\` |`,
    );
  }
  if (meta.notes) L.push("", meta.notes);
  return L.join("\n") + "\n";
}

/**
 * The Fashion-MNIST markdown: FD and class agreement by N, straightness, per-run commands,
 * and a generated reading of the FD differences from `shortcut` against the seed spread.
 * `meta` holds `commit`, `backend`, `settings`, `n`, `floorFd`, `floorAcc`, `classifier`
 * (a sentence on the classifier) and optional `notes`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { renderImageMarkdown } from "./shortcut.ts";
 * const row = { variant: "shortcut", seed: 0, fd: { 1: 10, 2: 8, 4: 6, 8: 5 },
 *   classAcc: { 1: 0.5, 2: 0.6, 4: 0.7, 8: 0.8 }, straightness: 50, trainSeconds: 10,
 *   finalLoss: 3, command: "deno task train:shortcut", commit: "abc" };
 * const md = renderImageMarkdown([row, { ...row, seed: 1, fd: { 1: 12, 2: 8, 4: 6, 8: 5 } }], {});
 * assert.match(md, /\| shortcut \| 2 \| 11\.00 ± 1\.41 \| 8\.00 ± 0\.00 \|/);
 * assert.match(md, /\| shortcut \| 2 \| 0\.500 ± 0\.000 \| 0\.600 ± 0\.000 \|/);
 * ```
 */
export function renderImageMarkdown(rows: readonly Row[], meta: Record<string, string>): string {
  const L = ["# Shortcut models with locality-aware losses on Fashion-MNIST (measured)", ""];
  const commits = [...new Set(rows.map((r) => r.commit))].map((c) => `\`${c}\``).join(", ");
  L.push(
    `Produced by \`deno task shortcut:table --dataset fashion-mnist\` (tasks/shortcut_table.ts); ` +
      `rows measured at commit ${commits} ("+": uncommitted changes), rendered at ` +
      `\`${meta.commit}\`; backend \`${meta.backend}\`. ${meta.settings ?? ""}`,
    "",
    `Few-step quality: FD = Fréchet distance between Gaussian fits of the penultimate features ` +
      `(128-D) of ${meta.n} samples of the EMA model after N Euler steps of size d = 1/N ` +
      `(dtBase = log2 N; labels 0…9 balanced; no guidance; the same noise for every N and ` +
      `row) and of the 10000 test images, lower is better. **This FD is not the Inception ` +
      `FID**: its features come from a small MLP classifier trained by this toolkit, so its ` +
      `values compare only with each other, never with published FIDs. ${meta.classifier ?? ""}` +
      ` Class agreement: the fraction of samples the classifier assigns to their conditioning ` +
      `label. Straightness: S = E Σ_k Δt‖(x1 − x0) − v_k‖² of 128-step trajectories ` +
      `(dtBase = 7) of 200 samples, summed over the 784 pixels; 0 is a straight path. ` +
      `\`untrained\` is each seed's model before training. Mean ± sample std over the seeds.`,
    "",
  );
  const order = ["untrained", ...VARIANTS];
  const groups = order.map((v) => [v, rows.filter((r) => r.variant === v)] as const)
    .filter(([, rs]) => rs.length > 0);
  L.push(
    `| variant | seeds | ${STEPS.map((N) => `FD @ ${N}`).join(" | ")} | straightness | train s |`,
    `|---|---|${STEPS.map(() => "---|").join("")}---|---|`,
  );
  for (const [v, rs] of groups) {
    const secs = v === "untrained" ? "–" : fmt(rs.map((r) => r.trainSeconds), 0);
    L.push(
      `| ${v} | ${rs.length} | ${
        STEPS.map((N) => fmt(rs.map((r) => r.fd![N]!), 2)).join(" | ")
      } | ${fmt(rs.map((r) => r.straightness), 1)} | ${secs} |`,
    );
  }
  L.push(
    "",
    `Data floor: FD of ${meta.n} real training images to the test images: ${meta.floorFd}; ` +
      `their class agreement (the classifier's accuracy on them): ${meta.floorAcc}.`,
    "",
    `| variant | seeds | ${STEPS.map((N) => `class agreement @ ${N}`).join(" | ")} |`,
    `|---|---|${STEPS.map(() => "---|").join("")}`,
  );
  for (const [v, rs] of groups) {
    L.push(
      `| ${v} | ${rs.length} | ${
        STEPS.map((N) => fmt(rs.map((r) => r.classAcc![N]!))).join(" | ")
      } |`,
    );
  }
  L.push("", ...imageSummary(rows));
  L.push(
    "## Per run",
    "",
    "| variant | seed | " + STEPS.map((N) => `FD @ ${N}`).join(" | ") + " | " +
      STEPS.map((N) => `acc @ ${N}`).join(" | ") + " | straightness | final loss | command |",
    `|---|---|${STEPS.map(() => "---|---|").join("")}---|---|---|`,
  );
  for (const r of rows) {
    L.push(
      `| ${r.variant} | ${r.seed} | ${STEPS.map((N) => r.fd![N]!.toFixed(2)).join(" | ")} | ` +
        `${STEPS.map((N) => r.classAcc![N]!.toFixed(3)).join(" | ")} | ` +
        `${r.straightness.toFixed(1)} | ${
          Number.isFinite(r.finalLoss) ? r.finalLoss.toFixed(3) : "–"
        } | \`${r.command}\` |`,
    );
  }
  if (meta.notes) L.push("", meta.notes);
  return L.join("\n") + "\n";
}

/** Generated reading of the image table: mean FD difference from `shortcut` vs the spread. */
function imageSummary(rows: readonly Row[]): string[] {
  const of = (v: string, N: number) => rows.filter((r) => r.variant === v).map((r) => r.fd![N]!);
  if (!of("shortcut", 1).length) return [];
  const parts: string[] = [];
  const separated: string[] = [];
  let spread = 0;
  for (const N of STEPS) spread = Math.max(spread, meanStd(of("shortcut", N))[1]);
  for (const v of VARIANTS.filter((v) => v !== "shortcut" && of(v, 1).length)) {
    const d = STEPS.map((N) => meanStd(of(v, N))[0] - meanStd(of("shortcut", N))[0]);
    for (const N of STEPS) spread = Math.max(spread, meanStd(of(v, N))[1]);
    parts.push(`${v} ${d.map((x) => (x >= 0 ? "+" : "") + x.toFixed(2)).join(" / ")}`);
    // Separated at N: the means differ by more than both groups' stds added.
    STEPS.forEach((N, i) => {
      const s = meanStd(of(v, N))[1] + meanStd(of("shortcut", N))[1];
      if (of(v, N).length > 1 && Math.abs(d[i]!) > s) {
        separated.push(`${v} at N = ${N} (${d[i]! >= 0 ? "+" : ""}${d[i]!.toFixed(2)})`);
      }
    });
  }
  if (!parts.length) return [];
  return [
    `Mean FD difference from \`shortcut\` at N = ${STEPS.join(" / ")} (negative: better): ` +
    `${parts.join("; ")}. Largest seed-to-seed std in the table: ${spread.toFixed(2)}. ` +
    (separated.length
      ? `Differences larger than the two groups' stds added: ${separated.join(", ")}.`
      : "No difference exceeds the two groups' stds added: at this scale no locality-aware " +
        "variant separates from the plain shortcut model."),
    "",
    ...pairedTable(rows),
  ];
}

/**
 * Same-seed differences from `shortcut` (a seed fixes the initial weights and the data
 * stream, so pairs share them): per seed, at N = 1 and 8, for FD and class agreement.
 */
function pairedTable(rows: readonly Row[]): string[] {
  const get = (v: string, s: number) => rows.find((r) => r.variant === v && r.seed === s);
  const seeds = [...new Set(rows.filter((r) => r.variant === "shortcut").map((r) => r.seed))]
    .sort((a, b) => a - b);
  const sign = (x: number, d: number) => (x >= 0 ? "+" : "") + x.toFixed(d);
  const L: string[] = [];
  for (const v of VARIANTS.filter((v) => v !== "shortcut")) {
    const ss = seeds.filter((s) => get(v, s));
    if (!ss.length) continue;
    const cell = (m: "fd" | "classAcc", N: number, d: number) => {
      const xs = ss.map((s) => get(v, s)![m]![N]! - get("shortcut", s)![m]![N]!);
      const same = xs.every((x) => x > 0) || xs.every((x) => x < 0);
      return xs.map((x) => sign(x, d)).join(", ") + (same && xs.length > 1 ? " (same sign)" : "");
    };
    L.push(
      `| ${v} | ${cell("fd", 1, 1)} | ${cell("fd", 8, 1)} | ` +
        `${cell("classAcc", 1, 3)} | ${cell("classAcc", 8, 3)} |`,
    );
  }
  if (!L.length) return [];
  return [
    `Same-seed differences from \`shortcut\` (variant − shortcut; seeds ${seeds.join(", ")}; a ` +
    "seed fixes the initial weights and the data stream):",
    "",
    "| variant | ΔFD @ 1 | ΔFD @ 8 | Δ class agreement @ 1 | Δ class agreement @ 8 |",
    "|---|---|---|---|---|",
    ...L,
    "",
  ];
}

/**
 * The data floor of the toy table: exact W2 between two independent `n`-point draws of the
 * toy (what a perfect model would score at this sample size).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { toyFloorW2 } from "./shortcut.ts";
 * const f = await toyFloorW2("8gaussians", 64);
 * assert.ok(f > 0 && f < 2, String(f)); // two draws of the same 8 modes are close, not equal
 * ```
 */
export async function toyFloorW2(dataset: CfmDataset, n: number): Promise<number> {
  const a = sampleToy(dataset, n, new Generator(1000003));
  const b = sampleToy(dataset, n, new Generator(2000003));
  try {
    return await w2(a, b);
  } finally {
    a.dispose();
    b.dispose();
  }
}
