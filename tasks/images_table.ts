/**
 * @file `deno task images:table` — issue 14's image comparison at equal compute: plain CFM
 * (`--loss-type si`), StableVM and StableVM + VA-REPA (seed 002's sigmoid schedule, τ 0.7,
 * k 20, the shipped classifier as encoder), each a `train:stablevm --data-dir fashion-mnist
 * --model dit-tiny` run with the same network, batch, steps, learning rate and data, over
 * seeds. Each run ends with its CFG class grid and the FD / class agreement of its guided EMA
 * samples (tasks/_stablevm_final.ts); that becomes a row with its wall time, step time,
 * commit and command. Rows accumulate in `<output-dir>/results.jsonl`; the markdown (mean ±
 * std per variant, a verdict that claims a difference only beyond the seed spread, per-class
 * agreement, the runs) and its JSON are rewritten after every run, and seed 0's class grids
 * go to `img/` beside `--out` (upscaled, the rows named by class). A run directory left by an interrupted invocation is
 * resumed, not restarted; the committed JSON beside `--out` seeds a missing `results.jsonl`,
 * so a session adds runs to what earlier ones measured. `--render-only` rewrites the files.
 *
 *   deno task images:table                                   # 3 variants × seeds 0, 1, 2
 *   deno task images:table --variants cfm,stablevm --seeds 0
 *   deno task images:table --max-train-steps 50 --eval-samples 200 --out /tmp/img/t.md \
 *     --output-dir /tmp/img/runs                             # a quick look
 * @module
 */
import {
  type FlagSpec,
  gitCommit,
  parseList,
  parseSeeds,
  parseTaskFlags,
  resumableRun,
  runTask,
  TableRows,
} from "../cli/mod.ts";
import { dirname } from "../lib/formats/fs.ts";
import { decodePng, encodePng, FASHION_MNIST_CLASSES, getBackend } from "../mod.ts";
import { labelGridRows } from "../viz/mod.ts";
import { main as trainMain } from "./train_stablevm.ts";
import { DEFAULT_CLASSIFIER } from "./eval.ts";
import { IMAGE_VARIANTS, type ImagesRow, renderImagesMarkdown } from "../cli/tables/images.ts";

/**
 * The flags. The defaults are sized for the 2-core CPU on `wasm`: the DiT 128 × 4 trains at
 * ~0.7 s a step at batch 64 for each variant (StableVM's bank target is two [64, R] matmuls;
 * VA-REPA adds the encoder), and scoring runs 4 · eval-samples · eval-steps rows through it
 * (midpoint, guided; ~5 ms a row): ~12 min of training and ~6 of scoring and grid a run.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { IMAGES_TABLE_FLAGS } from "./images_table.ts";
 * assert.equal(IMAGES_TABLE_FLAGS.find((f) => f.name === "variants")?.default, "cfm,stablevm,stablevm-repa");
 * ```
 */
export const IMAGES_TABLE_FLAGS = [
  { name: "variants", type: "string", default: IMAGE_VARIANTS.join(","), help: "variants" },
  { name: "seeds", type: "string", default: "0,1,2", help: "training seeds" },
  { name: "max-train-steps", type: "int", default: 1000, min: 1, help: "steps per run" },
  { name: "batch-size", type: "int", default: 64, min: 1, help: "batch size" },
  {
    name: "learning-rate",
    type: "number",
    default: 1e-3,
    min: 0,
    aliases: ["lr"],
    help: "Adam learning rate",
  },
  { name: "warmup-steps", type: "int", default: 200, min: 0, help: "linear lr warm-up" },
  { name: "hidden", type: "int", default: 128, min: 4, help: "DiT width (patch 4)" },
  { name: "blocks", type: "int", default: 4, min: 1, help: "DiT blocks" },
  {
    name: "eval-samples",
    type: "int",
    default: 500,
    min: 2,
    max: 10000,
    help: "guided samples scored per run (and test/train images in the FD)",
  },
  { name: "eval-steps", type: "int", default: 25, min: 1, help: "midpoint steps of those" },
  { name: "cfg-scale", type: "number", default: 3, min: 0, help: "guidance (grid and scores)" },
  { name: "grid-steps", type: "int", default: 50, min: 1, help: "midpoint steps of the grid" },
  { name: "classifier", type: "string", default: DEFAULT_CLASSIFIER, help: "scores the samples" },
  {
    name: "proj-encoder",
    type: "string",
    default: DEFAULT_CLASSIFIER,
    help: "VA-REPA's encoder (a train:classifier checkpoint)",
  },
  { name: "checkpoint-every", type: "int", default: 250, min: 1, help: "resume granularity" },
  { name: "output-dir", type: "string", default: "runs/images-table", help: "where runs go" },
  { name: "out", type: "string", default: "docs/images_table.md", help: "the markdown table" },
  { name: "render-only", type: "bool", help: "re-render --out from the rows, no training" },
] as const satisfies readonly FlagSpec[];

/**
 * Run the table; returns every row now in it (or `null` for `--help`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { main } from "./images_table.ts";
 * assert.equal(await main(["--help"]), null); // after printing the usage
 * ```
 */
export async function main(argv: readonly string[]): Promise<ImagesRow[] | null> {
  const f = parseTaskFlags(argv, IMAGES_TABLE_FLAGS, {
    task: "images:table",
    usage: "CFM vs StableVM vs StableVM + VA-REPA on Fashion-MNIST at equal compute, over seeds.",
  });
  if (!f) return null;
  const variants = parseList("--variants", f.variants, IMAGE_VARIANTS);
  const seeds = parseSeeds("--seeds", f.seeds);
  if (f.hidden % 4 !== 0) {
    throw new RangeError(
      `Expected --hidden to be a multiple of 4 (DiT heads) but found ${f.hidden}`,
    );
  }
  const mdDir = dirname(f.out);
  const table = await TableRows.open<ImagesRow>({
    table: "images",
    outputDir: f.outputDir,
    out: f.out,
    render: (rows) => renderImagesMarkdown(rows, mdDir),
    indent: 2,
  });
  if (f.renderOnly) return await table.rewrite();
  const setting = {
    steps: f.maxTrainSteps,
    batchSize: f.batchSize,
    learningRate: f.learningRate,
    warmupSteps: f.warmupSteps,
    hidden: f.hidden,
    blocks: f.blocks,
    evalSamples: f.evalSamples,
    evalSteps: f.evalSteps,
    cfgScale: f.cfgScale,
  };
  const same = (r: ImagesRow, variant: string, seed: number) =>
    r.variant === variant && r.seed === seed &&
    Object.entries(setting).every(([k, v]) => r[k as keyof typeof setting] === v);
  const commit = await gitCommit();
  const scoring = [
    ...["--max-train-steps", String(f.maxTrainSteps), "--eval-samples", String(f.evalSamples)],
    ...["--eval-steps", String(f.evalSteps), "--cfg-scale", String(f.cfgScale)],
    ...["--classifier", f.classifier, "--sample-steps", String(f.gridSteps)],
  ];
  for (const seed of seeds) {
    for (const variant of variants) {
      if ((await table.rows()).some((r) => same(r, variant, seed))) continue;
      const name = `${variant}-s${seed}-${f.maxTrainSteps}x${f.batchSize}-` +
        `h${f.hidden}b${f.blocks}-lr${f.learningRate}`;
      const dir = `${f.outputDir}/${name}`;
      const args = [
        ...["--data-dir", "fashion-mnist", "--model", "dit-tiny", "--hidden", String(f.hidden)],
        ...["--blocks", String(f.blocks), "--batch-size", String(f.batchSize)],
        ...["--learning-rate", String(f.learningRate), "--seed", String(seed)],
        ...["--warmup-steps", String(f.warmupSteps)],
        ...(variant === "cfm" ? ["--loss-type", "si"] : ["--loss-type", "stablevm"]),
        ...(variant === "cfm" ? [] : ["--prefill-bank-fully"]),
        ...(variant === "stablevm-repa"
          ? [
            ...["--use-proj-loss", "--proj-encoder", f.projEncoder],
            ...["--proj-weight-schedule", "sigmoid", "--proj-tau", "0.7", "--proj-k", "20"],
          ]
          : []),
        ...scoring,
        ...["--checkpoint-every", String(f.checkpointEvery)],
        ...["--output-dir", f.outputDir, "--exp-name", name],
      ];
      // An interrupted run of an earlier invocation continues where its checkpoint left it
      // (a finished one is only scored again, with this invocation's scoring flags).
      const resume = await resumableRun(dir);
      const t0 = performance.now();
      const r = (await trainMain(resume ? ["--resume", dir, ...scoring] : args))!;
      const seconds = (performance.now() - t0) / 1000;
      if (!r.eval) throw new Error(`images:table: ${dir} ended without scores`);
      let grid: string | undefined;
      if (seed === 0) {
        grid = `${mdDir}/img/images_table_${variant}_seed0.png`;
        await Deno.mkdir(`${mdDir}/img`, { recursive: true });
        // The run's raw grid, upscaled ×2 with each row named by its class.
        const raw = await decodePng(await Deno.readFile(r.samplePlot), r.samplePlot);
        const rgba = { width: raw.width, height: raw.height, rgba: raw.data }; // written as RGBA
        const c = labelGridRows(rgba, FASHION_MNIST_CLASSES, { scale: 2 });
        await Deno.writeFile(grid, await encodePng(c.width, c.height, c.rgba));
      }
      const row: ImagesRow = {
        variant,
        seed,
        ...setting,
        steps: r.steps,
        fd: r.eval.fd,
        fdRealTrainTest: r.eval.fdRealTrainTest,
        classAcc: r.eval.classAcc,
        classAccPerClass: r.eval.classAccPerClass,
        seconds,
        stepMs: Number.isFinite(r.stepMs) ? r.stepMs : null,
        resumed: resume,
        backend: getBackend().name,
        ...(grid ? { grid } : {}),
        command: `deno task train:stablevm ${args.join(" ")}`,
        commit,
      };
      await table.put(row, (x) => same(x, variant, seed));
    }
  }
  return await table.rows();
}

if (import.meta.main) await runTask("images:table", main);
