/**
 * @file `deno task gmm:table` — seed 002's comparison of training targets on SV's toy mixture,
 * over several seeds: each (objective, seed) is a `gmm` run (SV's toy: fresh 2048-sample
 * references each step, the stable target at every t), scored at the end by the Fisher
 * divergence of the EMA model against the exact mixture field. Each seed draws its own
 * mixture (as gmm_exp.py, whose seed also sets the mixture), so objectives are compared per
 * seed (paired differences) as well as by mean ± std. Rows accumulate in
 * `<output-dir>/results.jsonl` (one line per run, with its commit); the markdown and the JSON
 * are rewritten after each run, and `--render-only` rewrites them from the rows.
 *
 *   deno task gmm:table                      # cfm, stf, stable_vm × seeds 0, 1, 2, 3000 steps
 *   deno task gmm:table --max-train-steps 200 --seeds 0,1,2 --out /tmp/gmm.md   # a quick look
 * @module
 */
import {
  type FlagSpec,
  gitCommit,
  parseList,
  parseSeeds,
  parseTaskFlags,
  runTask,
  TableRows,
} from "../cli/mod.ts";
import { main as gmmMain } from "./gmm.ts";
import { type GmmRow, renderGmmMarkdown } from "../cli/tables/gmm.ts";

/**
 * The flags.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { GMM_TABLE_FLAGS } from "./gmm_table.ts";
 * assert.equal(GMM_TABLE_FLAGS.find((f) => f.name === "seeds")?.default, "0,1,2");
 * ```
 */
export const GMM_TABLE_FLAGS = [
  { name: "exps", type: "string", default: "cfm,stf,stable_vm", help: "objectives to compare" },
  { name: "seeds", type: "string", default: "0,1,2", help: "seeds (each its own mixture)" },
  { name: "max-train-steps", type: "int", default: 3000, min: 1, help: "steps per run" },
  { name: "learning-rate", type: "number", default: 1e-3, min: 0, help: "Adam learning rate" },
  { name: "eval-every", type: "int", default: 500, min: 1, help: "Fisher evaluation interval" },
  { name: "fisher-samples", type: "int", default: 2000, min: 1, help: "held-out points per t" },
  { name: "output-dir", type: "string", default: "runs/gmm-table", help: "where runs go" },
  { name: "out", type: "string", default: "docs/gmm_results.md", help: "the markdown table" },
  { name: "render-only", type: "bool", help: "re-render --out from the rows, no training" },
] as const satisfies readonly FlagSpec[];

const EXPS = ["cfm", "stf", "stable_vm", "stable_vm_efficient"];

/**
 * Run the table; returns every row now in the table (or `null` for `--help`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { main } from "./gmm_table.ts";
 * assert.equal(await main(["--help"]), null); // after printing the usage
 * ```
 */
export async function main(argv: readonly string[]): Promise<GmmRow[] | null> {
  const f = parseTaskFlags(argv, GMM_TABLE_FLAGS, {
    task: "gmm:table",
    usage: "Seed 002's targets (CFM, STF, StableVM) on SV's toy mixture, over several seeds.",
  });
  if (!f) return null;
  const exps = parseList("--exps", f.exps, EXPS);
  const seeds = parseSeeds("--seeds", f.seeds);
  const table = await TableRows.open<GmmRow>({
    table: "gmm",
    outputDir: f.outputDir,
    out: f.out,
    render: renderGmmMarkdown,
  });
  if (f.renderOnly) return await table.rewrite();
  const commit = await gitCommit();
  for (const seed of seeds) {
    for (const exp of exps) {
      const name = `${exp}-s${seed}`;
      const args = [
        "--exp",
        exp,
        "--seed",
        String(seed),
        "--max-train-steps",
        String(f.maxTrainSteps),
        "--learning-rate",
        String(f.learningRate),
        "--eval-every",
        String(f.evalEvery),
        "--fisher-samples",
        String(f.fisherSamples),
        "--no-plot-variance",
        "--output-dir",
        f.outputDir,
        "--exp-name",
        name,
      ];
      await Deno.remove(`${f.outputDir}/${name}`, { recursive: true }).catch(() => {});
      const t0 = performance.now();
      const r = await gmmMain(args);
      const last = r!.fisher[r!.fisher.length - 1]!;
      const row: GmmRow = {
        exp,
        seed,
        steps: f.maxTrainSteps,
        fisher: Object.fromEntries(last.values.map((p) => [String(p.t), p.value])),
        curve: r!.fisher.map((a) => ({
          step: a.step,
          mean: a.values.reduce((s, p) => s + p.value, 0) / a.values.length,
        })),
        fisherSamples: f.fisherSamples,
        seconds: (performance.now() - t0) / 1000,
        command: `deno task gmm ${args.join(" ")}`,
        commit,
      };
      await table.put(
        row,
        (x) => x.exp === exp && x.seed === seed && x.steps === f.maxTrainSteps,
      );
    }
  }
  return await table.rows();
}

if (import.meta.main) await runTask("gmm_table", main);
