/**
 * @file `deno task flowmap:table` — seed 004's checkerboard KL table over seeds: each (method,
 * seed) is a `train:flowmap` run with the seed's setup (the task's defaults: MLP 4×256 SiLU,
 * AdamW 2e-4, 1536 + 512 rows, 20k steps), whose final KL(target ‖ model) at N = 1, 2, 4, 8,
 * 16 map evaluations (60 bins on [−2.5, 2.5]², 100k samples) becomes a row. Rows accumulate in
 * `<output-dir>/results.jsonl` with their commit; the markdown (mean ± std per N beside the
 * seed's numbers) and its JSON are rewritten after every run. A run directory left by an
 * interrupted invocation is resumed, not restarted, so the table can be built over several
 * sessions; the committed JSON beside `--out` carries the finished rows to a fresh clone (a
 * missing `results.jsonl` starts from them), so a session adds runs to what earlier ones
 * measured. `--render-only` rewrites the files from the rows.
 *
 *   deno task flowmap:table                                   # lsd, psd × seeds 0, 1, 2
 *   deno task flowmap:table --max-train-steps 300 --eval-samples 20000 --out /tmp/fm.md \
 *     --output-dir /tmp/fm                                     # a quick look
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
import { main as trainMain } from "./train_flowmap.ts";
import { type FlowMapRow, renderFlowMapMarkdown } from "../cli/tables/flowmap.ts";

/**
 * The flags.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FLOWMAP_TABLE_FLAGS } from "./flowmap_table.ts";
 * assert.equal(FLOWMAP_TABLE_FLAGS.find((f) => f.name === "max-train-steps")?.default, 20000);
 * ```
 */
export const FLOWMAP_TABLE_FLAGS = [
  { name: "methods", type: "string", default: "lsd,psd", help: "objectives (lsd, psd, esd)" },
  { name: "seeds", type: "string", default: "0,1,2", help: "training seeds" },
  { name: "max-train-steps", type: "int", default: 20000, min: 1, help: "steps per run" },
  { name: "eval-samples", type: "int", default: 100000, min: 1000, help: "samples per KL" },
  { name: "output-dir", type: "string", default: "runs/flowmap-table", help: "where runs go" },
  { name: "out", type: "string", default: "docs/flowmap_table.md", help: "the markdown table" },
  { name: "render-only", type: "bool", help: "re-render --out from the rows, no training" },
] as const satisfies readonly FlagSpec[];

const METHODS = ["lsd", "psd", "esd"];

/**
 * Run the table; returns every row now in it (or `null` for `--help`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { main } from "./flowmap_table.ts";
 * assert.equal(await main(["--help"]), null); // after printing the usage
 * ```
 */
export async function main(argv: readonly string[]): Promise<FlowMapRow[] | null> {
  const f = parseTaskFlags(argv, FLOWMAP_TABLE_FLAGS, {
    task: "flowmap:table",
    usage: "Seed 004's checkerboard KL table (LSD, PSD) over seeds, beside the seed's numbers.",
  });
  if (!f) return null;
  const methods = parseList("--methods", f.methods, METHODS);
  const seeds = parseSeeds("--seeds", f.seeds);
  const table = await TableRows.open<FlowMapRow>({
    table: "flowmap",
    outputDir: f.outputDir,
    out: f.out,
    render: renderFlowMapMarkdown,
  });
  if (f.renderOnly) return await table.rewrite();
  const commit = await gitCommit();
  for (const seed of seeds) {
    for (const method of methods) {
      const have = (await table.rows()).some((r) =>
        r.method === method && r.seed === seed && r.steps === f.maxTrainSteps &&
        r.evalSamples === f.evalSamples
      );
      if (have) continue;
      const name = `${method}-s${seed}-${f.maxTrainSteps}`;
      const dir = `${f.outputDir}/${name}`;
      const args = [
        "--method",
        method,
        "--seed",
        String(seed),
        "--max-train-steps",
        String(f.maxTrainSteps),
        "--eval-samples",
        String(f.evalSamples),
        "--output-dir",
        f.outputDir,
        "--exp-name",
        name,
      ];
      // An interrupted run of an earlier invocation continues where its checkpoint left it.
      const resume = await resumableRun(dir);
      const t0 = performance.now();
      const r = await trainMain(resume ? ["--resume", dir] : args);
      const row: FlowMapRow = {
        method,
        seed,
        steps: r!.steps,
        evalSamples: f.evalSamples,
        kl: r!.kl,
        stepMs: r!.stepMs,
        seconds: (performance.now() - t0) / 1000,
        resumed: resume,
        command: `deno task train:flowmap ${args.join(" ")}`,
        commit,
      };
      await table.put(row, (x) =>
        x.method === method && x.seed === seed && x.steps === row.steps &&
        x.evalSamples === f.evalSamples);
    }
  }
  return await table.rows();
}

if (import.meta.main) await runTask("flowmap_table", main);
