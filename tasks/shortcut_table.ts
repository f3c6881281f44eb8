/**
 * @file `deno task shortcut:table` — seed 000's comparison on a 2-D toy at equal compute (same
 * steps, batch, model and seeds): a shortcut model alone, with the anchor loss (class-mean
 * anchors, and nearest k-means centroids from `deno task cluster`), and with the locality
 * loss. Each row is a real `train:shortcut`/`train:anchor`/`train:local` run; its few-step
 * quality (exact W2 at N = 1, 2, 4, 8 Euler steps of d = 1/N, EMA weights) and the
 * straightness of its 128-step flow are aggregated over seeds as mean ± std and written to
 * `docs/shortcut_results.md` and `.json` (rows also in `<output-dir>/results.jsonl`, which
 * later invocations extend).
 *
 *   deno task shortcut:table
 *   deno task shortcut:table --seeds 0 --max-train-steps 500 --out /tmp/t.md --output-dir /tmp/t
 * @module
 */
import {
  buildCfmModel,
  evaluateFewStep,
  Generator,
  getBackend,
  parseConfigFile,
  sampleToy,
  w2,
} from "../mod.ts";
import { type FlagSpec, parseFlags, runTask } from "../cli/mod.ts";
import { main as clusterMain } from "./cluster.ts";
import { main as shortcutMain } from "./train_shortcut.ts";
import { main as anchorMain } from "./train_anchor.ts";
import { main as localMain } from "./train_local.ts";
import type { ShortcutRunResult } from "./_shortcut_fit.ts";
import type { ShortcutTaskConfig } from "./_shortcut.ts";
import { gitCommit, renderMarkdown, type Row, STEPS, VARIANTS } from "./_shortcut_table.ts";

export { VARIANTS } from "./_shortcut_table.ts";

export type { Row } from "./_shortcut_table.ts";

/**
 * The flags.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { SHORTCUT_TABLE_FLAGS } from "./shortcut_table.ts";
 * assert.equal(SHORTCUT_TABLE_FLAGS.find((f) => f.name === "seeds")?.default, "0,1,2");
 * ```
 */
export const SHORTCUT_TABLE_FLAGS = [
  {
    name: "dataset",
    type: "choice",
    choices: ["8gaussians", "checkerboard"],
    default: "8gaussians",
  },
  { name: "seeds", type: "string", default: "0,1,2", help: "comma-separated seeds" },
  { name: "variants", type: "string", default: VARIANTS.join(","), help: "rows to train" },
  { name: "max-train-steps", type: "int", default: 4000, min: 1, help: "steps per run" },
  { name: "batch-size", type: "int", default: 256, min: 8, help: "batch size" },
  { name: "hidden", type: "int", default: 128, min: 4, help: "MLP width" },
  { name: "depth", type: "int", default: 3, min: 1, help: "MLP hidden layers" },
  { name: "lr", type: "number", default: 1e-3, min: 0, help: "AdamW lr (SC: 1e-4)" },
  { name: "ema-decay", type: "number", default: 0.99, min: 0, max: 1, help: "(SC: 0.999)" },
  { name: "eval-samples", type: "int", default: 1000, min: 2, help: "samples for W2" },
  { name: "num-clusters", type: "int", default: 16, min: 1, help: "k of anchor-clusters" },
  { name: "cluster-samples", type: "int", default: 4000, min: 2, help: "points clustered" },
  { name: "output-dir", type: "string", default: "runs/shortcut-table", help: "runs, results" },
  { name: "out", type: "string", default: "docs/shortcut_results.md", help: "markdown table" },
  { name: "render-only", type: "bool", help: "re-render --out from results.jsonl" },
] as const satisfies readonly FlagSpec[];

/**
 * Run the table (or `null` for --help); returns the rows.
 *
 * @example
 * ```ts
 * import { main } from "./shortcut_table.ts";
 * console.log(await main(["--help"])); // prints the usage, then null
 * ```
 */
export async function main(argv: readonly string[]): Promise<Row[] | null> {
  let help = false;
  const f = parseFlags(argv, SHORTCUT_TABLE_FLAGS, {
    task: "shortcut:table",
    usage: "Shortcut vs +anchor (labels, clusters) vs +locality on a 2-D toy, 3 seeds.",
    onHelp: (t) => void (console.log(t), help = true),
  });
  if (help) return null;
  const seeds = f.seeds.split(",").map((s) => Number(s.trim()));
  if (!seeds.length || seeds.some((s) => !Number.isInteger(s) || s < 0)) {
    throw new RangeError(
      `Expected --seeds to be comma-separated integers >= 0 but found ${f.seeds}`,
    );
  }
  const variants = f.variants.split(",").map((v) => v.trim());
  for (const v of variants) {
    if (!(VARIANTS as readonly string[]).includes(v)) {
      throw new RangeError(
        `Unknown variant "${v}" in --variants; expected some of ${VARIANTS.join(",")}`,
      );
    }
  }
  const dir = f.outputDir.replace(/\/+$/, "");
  await Deno.mkdir(dir, { recursive: true });
  const jsonl = `${dir}/results.jsonl`;
  const rows: Row[] = (await Deno.readTextFile(jsonl).catch(() => "")).split("\n")
    .filter((l) => l.trim()).map((l) => JSON.parse(l));
  const common = [
    `--dataset=${f.dataset}`,
    `--batch-size=${f.batchSize}`,
    `--hidden=${f.hidden}`,
    `--depth=${f.depth}`,
    `--lr=${f.lr}`,
    `--ema-decay=${f.emaDecay}`,
    `--max-train-steps=${f.maxTrainSteps}`,
    `--eval-samples=${f.evalSamples}`,
    `--log-every=${Math.min(500, f.maxTrainSteps)}`,
    `--checkpoint-every=${f.maxTrainSteps}`,
  ];
  const at = await gitCommit();
  const add = async (r: Omit<Row, "commit">) => {
    const row = { ...r, commit: at };
    rows.push(row);
    await Deno.writeTextFile(jsonl, JSON.stringify(row) + "\n", { append: true });
  };
  for (const seed of f.renderOnly ? [] : seeds) {
    const have = (v: string) => rows.some((r) => r.variant === v && r.seed === seed);
    let cfg: ShortcutTaskConfig | null = null;
    for (const v of variants) {
      if (have(v)) continue;
      const args = [
        ...common,
        `--seed=${seed}`,
        `--output-dir=${dir}/runs`,
        `--exp-name=${v}-seed${seed}`,
      ];
      let main = shortcutMain;
      if (v === "anchor-labels") main = anchorMain;
      if (v === "locality") main = localMain;
      if (v === "anchor-clusters") {
        const cd = `${dir}/clusters-seed${seed}`;
        const ca = [
          `--dataset=${f.dataset}`,
          `--n-samples=${f.clusterSamples}`,
          `--n-clusters=${f.numClusters}`,
          `--out-dir=${cd}`,
          `--seed=${seed}`,
        ];
        await clusterMain(ca);
        main = anchorMain;
        args.push(
          `--cluster-dir=${cd}`,
          "--model.use_cluster_centroids=True",
          "--model.use_label_anchors=False",
          `--model.num_clusters=${f.numClusters}`,
        );
      }
      const t0 = performance.now();
      const r: ShortcutRunResult | null = await main(args);
      const secs = (performance.now() - t0) / 1000;
      cfg = parseConfigFile(
        await Deno.readTextFile(`${r!.runDir}/config.json`),
      ) as ShortcutTaskConfig;
      const task = v === "shortcut"
        ? "train:shortcut"
        : v === "locality"
        ? "train:local"
        : "train:anchor";
      await add({
        variant: v,
        seed,
        w2: r!.eval!.w2,
        straightness: r!.eval!.straightness,
        trainSeconds: secs,
        finalLoss: r!.fit.loss,
        command: `deno task ${task} ${args.join(" ")}`,
      });
    }
    if (!have("untrained") && cfg) {
      const m = buildCfmModel({ ...cfg, dtConditioning: true }).eval();
      const e = await evaluateFewStep(m, cfg, { n: f.evalSamples, steps: STEPS });
      m.dispose();
      await add({
        variant: "untrained",
        seed,
        w2: e.w2,
        straightness: e.straightness,
        trainSeconds: 0,
        finalLoss: NaN,
        command: "(initial weights)",
      });
    }
  }
  const a = sampleToy(f.dataset, f.evalSamples, new Generator(1000003));
  const b = sampleToy(f.dataset, f.evalSamples, new Generator(2000003));
  const floor = await w2(a, b);
  a.dispose();
  b.dispose();
  const commit = await gitCommit();
  const settings = `Data ${f.dataset}; VelocityMLP ${f.depth}×${f.hidden} (SiLU) with the ` +
    `step-size embedding; ${f.maxTrainSteps} steps of batch ${f.batchSize} for every variant ` +
    `(equal optimizer steps and data); AdamW lr ${f.lr}, weight decay 0.1; fixed EMA ` +
    `${f.emaDecay}; 128 time steps, bootstrap_every 8 from the EMA network; anchor and ` +
    `locality weights 1, locality noise 0.1; anchor-clusters: k-means (deno task cluster) ` +
    `with k = ${f.numClusters} on ${f.clusterSamples} data points per seed.`;
  const md = renderMarkdown(rows, {
    commit,
    backend: getBackend().name,
    settings,
    n: String(f.evalSamples),
    floor: floor.toFixed(3),
    notes: "Deviations from SC: lr and EMA decay are the flags above (SC: 1e-4 and 0.999), " +
      "since SC's settings need many more steps than a CPU adapter affords here (the d ≥ 1/8 " +
      "shortcut levels are learned from the EMA teacher level by level). Gradients are not " +
      "clipped (SC). Fashion-MNIST rows are not part of this table.",
  });
  await Deno.mkdir(f.out.replace(/\/[^/]*$/, "") || ".", { recursive: true });
  await Deno.writeTextFile(f.out, md);
  const json = f.out.replace(/\.md$/, "") + ".json";
  const meta = { commit, backend: getBackend().name, settings, dataFloorW2: floor, flags: f };
  await Deno.writeTextFile(json, JSON.stringify({ ...meta, rows }, null, 2) + "\n");
  console.log(md);
  return rows;
}

if (import.meta.main) await runTask("shortcut:table", main);
