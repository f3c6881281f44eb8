/**
 * @file Measure CFM against OT-CFM on the 2-D toys at equal steps, identical seeds and model,
 * and write the table to `docs/cfm_results.md`. Each (dataset, coupling) row is a
 * `train:cfm` run followed by `eval` calls (Euler at several step counts, dopri5 at
 * atol = rtol = 1e-5, straightness of the Euler-100 paths); rows accumulate in
 * `<output-dir>/results.jsonl`, so separate invocations add rows to one table.
 *
 *   FLOWGPU_BACKEND=webgpu deno run --allow-read --allow-write=runs,docs --allow-env \
 *     tasks/cfm_table.ts --datasets 8gaussians,moons,checkerboard --ot-methods none,exact
 * @module
 */
import {
  CFM_DATASETS,
  type CfmDataset,
  type EvalRecord,
  evaluateCfm as evaluate,
  getBackend,
  readCfmCheckpoint,
} from "../mod.ts";
import {
  type FlagSpec,
  gitCommit,
  parseList,
  parseSeeds,
  parseTaskFlags,
  runTask,
} from "../cli/mod.ts";
import { main as trainMain, OT_METHODS } from "./train_cfm.ts";
import { adapterName, fillPairing, floor, type TableRow, writeTable } from "../cli/tables/cfm.ts";

export { renderMarkdown, type TableRow } from "../cli/tables/cfm.ts";

/**
 * The flags.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { CFM_TABLE_FLAGS } from "./cfm_table.ts";
 * assert.equal(CFM_TABLE_FLAGS.find((f) => f.name === "ot-methods")?.default, "none,exact");
 * ```
 */
export const CFM_TABLE_FLAGS = [
  {
    name: "datasets",
    type: "string",
    default: "8gaussians,moons,checkerboard",
    help: "comma-separated 2-D toys",
  },
  { name: "ot-methods", type: "string", default: "none,exact", help: "couplings to compare" },
  { name: "max-train-steps", type: "int", default: 1500, min: 1, help: "steps per run" },
  { name: "batch-size", type: "int", default: 256, min: 1, help: "batch size" },
  { name: "hidden", type: "int", default: 128, min: 4, help: "MLP width" },
  { name: "depth", type: "int", default: 3, min: 1, help: "MLP hidden layers" },
  { name: "lr", type: "number", default: 1e-3, min: 0, help: "Adam learning rate" },
  { name: "seeds", type: "string", default: "0,1,2", help: "training and evaluation seeds" },
  { name: "num-samples", type: "int", default: 2000, min: 2, help: "samples per evaluation" },
  { name: "euler-steps", type: "string", default: "1,2,4,10,100", help: "Euler step counts" },
  { name: "output-dir", type: "string", default: "runs/cfm-table", help: "where runs go" },
  { name: "out", type: "string", default: "docs/cfm_results.md", help: "the markdown table" },
  {
    name: "render-only",
    type: "bool",
    help: "re-render --out from <output-dir>/results.jsonl without training",
  },
] as const satisfies readonly FlagSpec[];

/**
 * Run the table; returns the rows measured in this invocation (or `null` for `--help`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { main } from "./cfm_table.ts";
 * assert.equal(await main(["--help"]), null); // after printing the usage
 * ```
 */
export async function main(argv: readonly string[]): Promise<TableRow[] | null> {
  const f = parseTaskFlags(argv, CFM_TABLE_FLAGS, {
    task: "cfm:table",
    usage: "Measure CFM vs OT-CFM on 2-D toys and write the markdown table.",
  });
  if (!f) return null;
  const toys = CFM_DATASETS.filter((d) => d !== "fashion-mnist");
  const datasets = parseList("--datasets", f.datasets, toys) as CfmDataset[];
  const ots = parseList("--ot-methods", f.otMethods, OT_METHODS);
  const eulerSteps = parseList("--euler-steps", f.eulerSteps).map((s) => {
    const k = Number(s);
    if (!Number.isInteger(k) || k < 1) {
      throw new RangeError(`Bad step count "${s}" in --euler-steps`);
    }
    return k;
  });
  const seeds = parseSeeds("--seeds", f.seeds);
  const adapter = await adapterName();
  const commit = await gitCommit();
  const backend = getBackend().name;
  await Deno.mkdir(f.outputDir, { recursive: true });
  const resultsPath = `${f.outputDir}/results.jsonl`;
  const readRows = async (): Promise<TableRow[]> => {
    try {
      return (await Deno.readTextFile(resultsPath)).split("\n").filter((l) => l.trim()).map((l) =>
        JSON.parse(l)
      );
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return [];
      throw e;
    }
  };
  const floors: Record<string, { w2: number; kl: number }> = {};
  const pairing: Record<string, number> = {};
  const fresh: TableRow[] = [];
  if (f.renderOnly) {
    const rows = await readRows();
    for (const d of new Set(rows.map((r) => r.dataset))) {
      floors[d] ??= await floor(d, rows[0]!.numSamples, 0);
    }
    await fillPairing(rows, pairing);
    await writeTable(f.out, rows, floors, pairing);
    console.log(`table: ${f.out} (${rows.length} rows re-rendered)`);
    return [];
  }
  const t00 = performance.now();
  for (const seed of seeds) {
    for (const ds of datasets) {
      for (const ot of ots) {
        const exp = `${ds}-${ot}-s${seed}`;
        const trainArgs = Object.entries({
          "dataset": ds,
          "ot": ot,
          "max-train-steps": f.maxTrainSteps,
          "batch-size": f.batchSize,
          "hidden": f.hidden,
          "depth": f.depth,
          "lr": f.lr,
          "seed": seed,
          "log-every": 250,
          "checkpoint-every": f.maxTrainSteps,
          "output-dir": f.outputDir,
          "exp-name": exp,
        }).flatMap(([k, v]) => [`--${k}`, String(v)]);
        await Deno.remove(`${f.outputDir}/${exp}`, { recursive: true }).catch(() => {});
        const t0 = performance.now();
        const tr = await trainMain(trainArgs);
        const trainSeconds = (performance.now() - t0) / 1000;
        const t1 = performance.now();
        const ck = await readCfmCheckpoint(tr!.runDir);
        const common = { numSamples: f.numSamples, seed, useEma: true };
        const evalCmd = (extra: string) =>
          `deno task eval --checkpoint ${f.outputDir}/${exp} --num-samples ${f.numSamples} --seed ${seed} ${extra}`;
        const euler: TableRow["euler"] = [];
        const evalCommands: string[] = [];
        let st: EvalRecord | null = null;
        for (const k of eulerSteps) {
          const last = k === Math.max(...eulerSteps);
          const metrics = last ? ["w2", "kl", "straightness"] as const : ["w2", "kl"] as const;
          const r = await evaluate(ck, { ...common, metrics, sampler: "euler", numSteps: k });
          if (last) st = r;
          euler.push({ steps: k, w2: r.w2!, kl: r.kl! });
          evalCommands.push(
            evalCmd(`--sampler euler --num-steps ${k} --metrics ${metrics.join(",")}`),
          );
        }
        const dp = await evaluate(ck, {
          ...common,
          metrics: ["w2", "kl", "nfe"],
          sampler: "dopri5",
          numSteps: 1,
          atol: 1e-5,
          rtol: 1e-5,
        });
        evalCommands.push(evalCmd("--sampler dopri5 --atol 1e-5 --rtol 1e-5 --metrics w2,kl,nfe"));
        const row: TableRow = {
          dataset: ds,
          ot,
          steps: f.maxTrainSteps,
          seed,
          numSamples: f.numSamples,
          trainSeconds,
          evalSeconds: (performance.now() - t1) / 1000,
          finalLoss: tr!.finalLoss,
          euler,
          dopri5: { nfe: dp.nfe!, w2: dp.w2!, kl: dp.kl! },
          straightness: st?.straightness ?? NaN,
          lengthRatio: st?.lengthRatio ?? NaN,
          trainCommand: `deno task train:cfm ${trainArgs.join(" ")}`,
          evalCommands,
          backend,
          adapter,
          commit,
        };
        fresh.push(row);
        // Replace an older row of the same (dataset, coupling, seed, steps), keep the rest.
        const rows = (await readRows()).filter((r) =>
          !(r.dataset === ds && r.ot === ot && r.seed === seed && r.steps === f.maxTrainSteps)
        );
        rows.push(row);
        await Deno.writeTextFile(resultsPath, rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
        for (const d of new Set(rows.map((r) => r.dataset))) {
          floors[d] ??= await floor(d, f.numSamples, 0);
        }
        await fillPairing(rows, pairing);
        await writeTable(f.out, rows, floors, pairing);
        console.error(
          `cfm_table: ${ds}/${ot}: train ${trainSeconds.toFixed(0)} s, W2 euler-${
            euler.map((e) => `${e.steps}:${e.w2.toFixed(3)}`).join(" ")
          }, dopri5 NFE ${dp.nfe}, S ${row.straightness.toFixed(4)}`,
        );
      }
    }
  }
  console.log(`table: ${f.out} (${((performance.now() - t00) / 1000).toFixed(0)} s)`);
  return fresh;
}

if (import.meta.main) await runTask("cfm_table", main);
