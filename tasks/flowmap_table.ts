/**
 * @file `deno task flowmap:table` — seed 004's checkerboard KL table over seeds: each (method,
 * seed) is a `train:flowmap` run with the seed's setup (the task's defaults: MLP 4×256 SiLU,
 * AdamW 2e-4, 1536 + 512 rows, 20k steps), whose final KL(target ‖ model) at N = 1, 2, 4, 8,
 * 16 map evaluations (60 bins on [−2.5, 2.5]², 100k samples) becomes a row. Rows accumulate in
 * `<output-dir>/results.jsonl` with their commit; the markdown (mean ± std per N beside the
 * seed's numbers) and its JSON are rewritten after every run. A run directory left by an
 * interrupted invocation is resumed, not restarted, so the table can be built over several
 * sessions; `--render-only` rewrites the files from the rows.
 *
 *   deno task flowmap:table                                   # lsd, psd × seeds 0, 1, 2
 *   deno task flowmap:table --max-train-steps 300 --eval-samples 20000 --out /tmp/fm.md \
 *     --output-dir /tmp/fm                                     # a quick look
 * @module
 */
import { type FlagSpec, gitCommit, parseFlags, runTask } from "../cli/mod.ts";
import { main as trainMain } from "./train_flowmap.ts";
import { type FlowMapRow, renderFlowMapMarkdown } from "./_flowmap_table.ts";

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

function list(flag: string, s: string): string[] {
  const xs = s.split(",").map((x) => x.trim()).filter((x) => x);
  if (!xs.length) throw new RangeError(`Expected ${flag} to be a non-empty comma-separated list`);
  return xs;
}

async function readRows(path: string): Promise<FlowMapRow[]> {
  try {
    return (await Deno.readTextFile(path)).split("\n").filter((l) => l.trim()).map((l) =>
      JSON.parse(l)
    );
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
}

const exists = (p: string) => Deno.stat(p).then(() => true, () => false);

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
  let help = false;
  const f = parseFlags(argv, FLOWMAP_TABLE_FLAGS, {
    task: "flowmap:table",
    usage: "Seed 004's checkerboard KL table (LSD, PSD) over seeds, beside the seed's numbers.",
    onHelp: (t) => {
      console.log(t);
      help = true;
    },
  });
  if (help) return null;
  const methods = list("--methods", f.methods).map((m) => {
    if (!METHODS.includes(m)) {
      throw new RangeError(`Unknown method "${m}" in --methods: expected ${METHODS.join(", ")}`);
    }
    return m;
  });
  const seeds = list("--seeds", f.seeds).map((s) => {
    const k = Number(s);
    if (!Number.isInteger(k) || k < 0) throw new RangeError(`Bad seed "${s}" in --seeds`);
    return k;
  });
  await Deno.mkdir(f.outputDir, { recursive: true });
  const rowsPath = `${f.outputDir}/results.jsonl`;
  const write = async (rows: FlowMapRow[]) => {
    await Deno.writeTextFile(f.out, renderFlowMapMarkdown(rows));
    const json = f.out.replace(/\.md$/, "") + ".json";
    await Deno.writeTextFile(json, JSON.stringify({ table: "flowmap", rows }, null, 1) + "\n");
    console.log(`table: ${f.out}, ${json} (${rows.length} rows)`);
  };
  if (f.renderOnly) {
    const rows = await readRows(rowsPath);
    await write(rows);
    return rows;
  }
  const commit = await gitCommit();
  for (const seed of seeds) {
    for (const method of methods) {
      const have = (await readRows(rowsPath)).some((r) =>
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
      const resume = await exists(`${dir}/checkpoints/last.safetensors`);
      if (!resume) await Deno.remove(dir, { recursive: true }).catch(() => {});
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
      const rows = (await readRows(rowsPath)).filter((x) =>
        !(x.method === method && x.seed === seed && x.steps === row.steps &&
          x.evalSamples === f.evalSamples)
      );
      rows.push(row);
      await Deno.writeTextFile(rowsPath, rows.map((x) => JSON.stringify(x)).join("\n") + "\n");
      await write(rows);
    }
  }
  return await readRows(rowsPath);
}

if (import.meta.main) await runTask("flowmap_table", main);
