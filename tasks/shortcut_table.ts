/**
 * @file `deno task shortcut:table` — seed 000's comparison on a 2-D toy at equal compute (same
 * steps, batch, model and seeds): a shortcut model alone, with the anchor loss (class-mean
 * anchors, and nearest k-means centroids from `deno task cluster`), and with the locality
 * loss. Each row is a real `train:shortcut`/`train:anchor`/`train:local` run; its few-step
 * quality (exact W2 at N = 1, 2, 4, 8 Euler steps of d = 1/N, EMA weights) and the
 * straightness of its 128-step flow are aggregated over seeds as mean ± std and written to
 * `docs/shortcut_results.md` and `.json` (rows also in `<output-dir>/results.jsonl`, which
 * later invocations extend). With `--dataset fashion-mnist` the rows are VelocityMLP runs on
 * flat pixels scored by FD (features of the toolkit's classifier; not the Inception FID) and
 * class agreement, written to `docs/shortcut_results_fmnist.md`.
 *
 *   deno task shortcut:table
 *   deno task shortcut:table --dataset fashion-mnist
 *   deno task shortcut:table --seeds 0 --max-train-steps 500 --out /tmp/t.md --output-dir /tmp/t
 * @module
 */
import {
  buildCfmModel,
  type CfmDataset,
  evaluateFewStep,
  getBackend,
  parseConfigFile,
} from "../mod.ts";
import {
  type FlagSpec,
  gitCommit,
  parseList,
  parseSeeds,
  parseTaskFlags,
  readJsonl,
  runTask,
} from "../cli/mod.ts";
import { main as clusterMain } from "./cluster.ts";
import { main as shortcutMain } from "./train_shortcut.ts";
import { main as anchorMain } from "./train_anchor.ts";
import { main as localMain } from "./train_local.ts";
import type { ShortcutRunResult } from "./_shortcut_fit.ts";
import type { ShortcutTaskConfig } from "./_shortcut.ts";
import {
  renderMarkdown,
  type Row,
  SC_DEVIATIONS,
  STEPS,
  toyFloorW2,
  VARIANTS,
} from "../cli/tables/shortcut.ts";
import { imageMarkdown, imageScorer } from "./_shortcut_images.ts";

export { type Row, VARIANTS } from "../cli/tables/shortcut.ts";

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
    choices: ["8gaussians", "checkerboard", "fashion-mnist"],
    default: "8gaussians",
  },
  { name: "seeds", type: "string", default: "0,1,2", help: "comma-separated seeds" },
  { name: "variants", type: "string", default: VARIANTS.join(","), help: "rows to train" },
  { name: "max-train-steps", type: "int", min: 1, help: "steps per run (4000; images 1000)" },
  { name: "batch-size", type: "int", min: 8, help: "batch size (256; images 64)" },
  { name: "hidden", type: "int", min: 4, help: "MLP width (128; images 256)" },
  { name: "depth", type: "int", default: 3, min: 1, help: "MLP hidden layers" },
  { name: "lr", type: "number", default: 1e-3, min: 0, help: "AdamW lr (SC: 1e-4)" },
  { name: "ema-decay", type: "number", default: 0.99, min: 0, max: 1, help: "(SC: 0.999)" },
  { name: "eval-samples", type: "int", min: 2, help: "samples for W2 (1000) or FD (2000)" },
  { name: "num-clusters", type: "int", min: 1, help: "k of anchor-clusters (16; images 50)" },
  { name: "cluster-samples", type: "int", min: 2, help: "points clustered (4000; 10000)" },
  { name: "classifier", type: "string", default: "runs/classifier-fmnist", help: "FD features" },
  { name: "output-dir", type: "string", help: "runs, results (runs/shortcut-table[-fmnist])" },
  { name: "out", type: "string", help: "markdown (docs/shortcut_results[_fmnist].md)" },
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
  const f = parseTaskFlags(argv, SHORTCUT_TABLE_FLAGS, {
    task: "shortcut:table",
    usage: "Shortcut vs +anchor (labels, clusters) vs +locality on a 2-D toy or " +
      "Fashion-MNIST (--dataset fashion-mnist: VelocityMLP, FD and class agreement), 3 seeds.",
  });
  if (!f) return null;
  const seeds = parseSeeds("--seeds", f.seeds);
  const variants = parseList("--variants", f.variants, VARIANTS);
  const images = f.dataset === "fashion-mnist";
  const o = {
    steps: f.maxTrainSteps ?? (images ? 1000 : 4000),
    batch: f.batchSize ?? (images ? 64 : 256),
    hidden: f.hidden ?? (images ? 256 : 128),
    evalSamples: f.evalSamples ?? (images ? 2000 : 1000),
    k: f.numClusters ?? (images ? 50 : 16),
    clusterSamples: f.clusterSamples ?? (images ? 10000 : 4000),
    out: f.out ?? (images ? "docs/shortcut_results_fmnist.md" : "docs/shortcut_results.md"),
  };
  const dir = (f.outputDir ?? (images ? "runs/shortcut-table-fmnist" : "runs/shortcut-table"))
    .replace(/\/+$/, "");
  await Deno.mkdir(dir, { recursive: true });
  const jsonl = `${dir}/results.jsonl`;
  const rows = await readJsonl<Row>(jsonl);
  const common = [
    `--dataset=${f.dataset}`,
    ...(images ? ["--model=velocity-mlp"] : []),
    `--batch-size=${o.batch}`,
    `--hidden=${o.hidden}`,
    `--depth=${f.depth}`,
    `--lr=${f.lr}`,
    `--ema-decay=${f.emaDecay}`,
    `--max-train-steps=${o.steps}`,
    ...(images ? [] : [`--eval-samples=${o.evalSamples}`]),
    `--log-every=${Math.min(images ? 250 : 500, o.steps)}`,
    `--checkpoint-every=${o.steps}`,
  ];
  const scorer = images ? await imageScorer(f.classifier, o.evalSamples, { steps: STEPS }) : null;
  const at = await gitCommit();
  type Scored = { w2: Record<number, number> } | { fd: Record<number, number> };
  const add = async (
    variant: string,
    seed: number,
    e: Scored & { straightness: number; classAcc?: Record<number, number> },
    r: Pick<Row, "trainSeconds" | "finalLoss" | "command">,
  ) => {
    const m = "w2" in e ? { w2: e.w2 } : { fd: e.fd, classAcc: e.classAcc };
    const row = { variant, seed, ...m, straightness: e.straightness, ...r, commit: at };
    rows.push(row);
    await Deno.writeTextFile(jsonl, JSON.stringify(row) + "\n", { append: true });
  };
  try {
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
            `--n-samples=${o.clusterSamples}`,
            `--n-clusters=${o.k}`,
            `--out-dir=${cd}`,
            `--seed=${seed}`,
            ...(images ? ["--encoder=pixels"] : []),
          ];
          await clusterMain(ca);
          main = anchorMain;
          args.push(
            `--cluster-dir=${cd}`,
            "--model.use_cluster_centroids=True",
            "--model.use_label_anchors=False",
            `--model.num_clusters=${o.k}`,
          );
        }
        const t0 = performance.now();
        const r: ShortcutRunResult | null = await main(args);
        const secs = (performance.now() - t0) / 1000;
        cfg = parseConfigFile(
          await Deno.readTextFile(`${r!.runDir}/config.json`),
        ) as ShortcutTaskConfig;
        const task = { shortcut: "train:shortcut", locality: "train:local" }[v] ?? "train:anchor";
        const e = scorer ? await scorer.scoreRun(r!.runDir) : r!.eval!;
        await add(v, seed, e, {
          trainSeconds: secs,
          finalLoss: r!.fit.loss,
          command: `deno task ${task} ${args.join(" ")}`,
        });
      }
      if (!have("untrained") && cfg) {
        const m = buildCfmModel({ ...cfg, dtConditioning: true }).eval();
        const e = scorer
          ? await scorer.score(m, cfg)
          : await evaluateFewStep(m, cfg, { n: o.evalSamples, steps: STEPS });
        m.dispose();
        await add("untrained", seed, e, {
          trainSeconds: 0,
          finalLoss: NaN,
          command: "(initial weights)",
        });
      }
    }
  } finally {
    scorer?.dispose();
  }
  const [commit, backend] = [await gitCommit(), getBackend().name];
  const shared = `${o.steps} steps of batch ${o.batch} for every variant (equal optimizer steps ` +
    `and data); AdamW lr ${f.lr}, weight decay 0.1; fixed EMA ${f.emaDecay}; 128 time steps, ` +
    `bootstrap_every 8 from the EMA network; anchor and locality weights 1, locality noise ` +
    `0.1; anchor-clusters: k-means (deno task cluster${images ? " --encoder pixels" : ""}) ` +
    `with k = ${o.k} on ${o.clusterSamples} data points per seed.`;
  let md: string, extra: Record<string, unknown>;
  if (scorer) {
    ({ md, extra } = imageMarkdown(rows, scorer, {
      commit,
      backend,
      model: `VelocityMLP ${f.depth}×${o.hidden}`,
      shared,
      n: o.evalSamples,
      notes: SC_DEVIATIONS,
    }));
  } else {
    const floor = await toyFloorW2(f.dataset as CfmDataset, o.evalSamples);
    const settings = `Data ${f.dataset}; VelocityMLP ${f.depth}×${o.hidden} (SiLU) with the ` +
      `step-size embedding; ${shared}`;
    md = renderMarkdown(rows, {
      commit,
      backend,
      settings,
      n: String(o.evalSamples),
      floor: floor.toFixed(3),
      notes: SC_DEVIATIONS + " Fashion-MNIST rows: docs/shortcut_results_fmnist.md " +
        "(deno task shortcut:table --dataset fashion-mnist).",
    });
    extra = { settings, dataFloorW2: floor };
  }
  await Deno.mkdir(o.out.replace(/\/[^/]*$/, "") || ".", { recursive: true });
  await Deno.writeTextFile(o.out, md);
  const json = o.out.replace(/\.md$/, "") + ".json";
  const meta = { commit, backend, ...extra, flags: f, resolved: o };
  await Deno.writeTextFile(json, JSON.stringify({ ...meta, rows }, null, 2) + "\n");
  console.log(md);
  return rows;
}

if (import.meta.main) await runTask("shortcut:table", main);
