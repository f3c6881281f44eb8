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
  type FlagSpec,
  Generator,
  getBackend,
  histogramKL,
  otCouple,
  parseFlags,
  sampleToy,
  w2,
} from "../mod.ts";
import { init } from "../mod.ts";
import { CFM_DATASETS, type CfmDataset, resolveCheckpoint } from "./_train_loop.ts";
import { main as trainMain, OT_METHODS } from "./train_cfm.ts";
import { type EvalRecord, evaluate } from "./eval.ts";

/**
 * The flags.
 *
 * @example
 * ```ts
 * import { CFM_TABLE_FLAGS } from "./cfm_table.ts";
 * console.log(CFM_TABLE_FLAGS.find((f) => f.name === "ot-methods")?.default); // none,exact
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
  { name: "seed", type: "int", default: 0, min: 0, help: "training and evaluation seed" },
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

/** One measured row. */
export interface TableRow {
  dataset: CfmDataset;
  ot: string;
  steps: number;
  seed: number;
  numSamples: number;
  trainSeconds: number;
  evalSeconds: number;
  finalLoss: number;
  euler: { steps: number; w2: number; kl: number }[];
  dopri5: { nfe: number; w2: number; kl: number };
  straightness: number;
  lengthRatio: number;
  trainCommand: string;
  evalCommands: string[];
  backend: string;
  adapter: string;
}

function list(flag: string, s: string): string[] {
  const xs = s.split(",").map((x) => x.trim()).filter((x) => x);
  if (!xs.length) throw new RangeError(`Expected ${flag} to be a non-empty comma-separated list`);
  return xs;
}

async function adapterName(): Promise<string> {
  if (getBackend().name !== "webgpu") return "CPU backend (plain loops)";
  try {
    const a = await navigator.gpu?.requestAdapter();
    const i = a?.info;
    return i
      ? `${i.description || i.device || "unknown"} (vendor ${i.vendor || "?"}, architecture ${
        i.architecture || "?"
      })`
      : "unknown";
  } catch {
    return "unknown";
  }
}

/** Mean share of distinct source rows the coupling uses per training batch (5 batches). */
async function pairingShare(
  dataset: CfmDataset,
  ot: string,
  batch: number,
  seed: number,
): Promise<number> {
  if (ot === "none" || ot === "exact") return 1;
  const gen = new Generator(seed + 31337);
  let share = 0;
  for (let k = 0; k < 5; k++) {
    const x1 = sampleToy(dataset, batch, gen), x0 = gen.normal([batch, 2]);
    const c = await otCouple(x0, x1, {
      method: ot as "argmax" | "sample",
      reg: 0.05,
      maxIters: 50,
      checkEvery: 50,
      generator: gen,
    });
    share += new Set(c.sourceIndex).size / batch;
    for (const t of [x0, x1, c.x0, c.x1]) t.dispose();
  }
  return share / 5;
}

async function fillPairing(rows: readonly TableRow[], out: Record<string, number>): Promise<void> {
  for (const r of rows) {
    const b = Number(r.trainCommand.match(/--batch-size (\d+)/)?.[1] ?? 256);
    out[`${r.dataset}/${r.ot}`] ??= await pairingShare(r.dataset, r.ot, b, r.seed);
  }
}

/** Data-vs-data floor: the metrics between two independent draws of the toy. */
async function floor(
  dataset: CfmDataset,
  n: number,
  seed: number,
): Promise<{ w2: number; kl: number }> {
  const a = sampleToy(dataset, n, new Generator(seed + 1000003));
  const b = sampleToy(dataset, n, new Generator(seed + 2000003));
  const [da, db] = [await a.data(), await b.data()];
  a.dispose();
  b.dispose();
  let lo = Infinity, hi = -Infinity;
  for (const v of da) [lo, hi] = [Math.min(lo, v), Math.max(hi, v)];
  const pad = 0.05 * (hi - lo);
  return {
    w2: await w2(da, db),
    kl: histogramKL(da, db, { bins: 25, range: [lo - pad, hi + pad], eps: 1e-4 }),
  };
}

const f4 = (x: number) => (Number.isFinite(x) ? x.toFixed(x >= 100 ? 1 : x >= 10 ? 2 : 3) : "n/a");

/**
 * Render the markdown for all rows measured so far.
 *
 * @example
 * ```ts
 * import { renderMarkdown } from "./cfm_table.ts";
 * console.log(renderMarkdown([], {}).startsWith("# CFM vs OT-CFM")); // true
 * ```
 */
export function renderMarkdown(
  rows: readonly TableRow[],
  floors: Record<string, { w2: number; kl: number }>,
  pairing: Record<string, number> = {},
): string {
  const L: string[] = [];
  const r0 = rows[0];
  const eulerSteps = r0 ? r0.euler.map((e) => e.steps) : [];
  L.push("# CFM vs OT-CFM on 2-D toys (measured)", "");
  L.push(
    "Produced by `tasks/cfm_table.ts`. Source N(0, I); convention t = 0 noise, t = 1 data. " +
      "Same model (VelocityMLP, SiLU), same seed, same steps for both couplings; samples and " +
      "reference data use the same seeds for every row, so the rows differ only by the coupling.",
    "",
  );
  if (r0) {
    L.push(
      `- Backend: \`${r0.backend}\`; adapter: ${r0.adapter}.`,
      `- Training: ${r0.steps} steps, batch ${r0.trainCommand.match(/--batch-size (\d+)/)?.[1]}, ` +
        `model ${r0.trainCommand.match(/--depth (\d+)/)?.[1]}×${
          r0.trainCommand.match(/--hidden (\d+)/)?.[1]
        }, Adam lr ${r0.trainCommand.match(/--lr ([\d.e-]+)/)?.[1]}, grad clip 1, EMA 0.999 ` +
        `(evaluated with EMA weights), seed ${r0.seed}.`,
      "- `none` = independent pairs (I-CFM, σ = 0); `exact` = OT-CFM with the exact minibatch " +
        "assignment (Hungarian; torchcfm's default `pot.emd`); `argmax` = seed 003's Sinkhorn " +
        "(reg 0.05 on the max-normalised cost, 50 iterations) + argmax.",
      `- W2: exact (optimal assignment) between ${r0.numSamples} model samples and ` +
        `${r0.numSamples} fresh data samples. KL: histogram KL(data ‖ model), 25×25 bins over ` +
        "the data's range, 1e-4 added to each model bin.",
      `- Data floor: the same metrics between two independent ${r0.numSamples}-sample draws of the data ` +
        "(what a perfect model would score).",
      "",
    );
  }
  const byDs = new Map<string, TableRow[]>();
  for (const r of rows) byDs.set(r.dataset, [...(byDs.get(r.dataset) ?? []), r]);
  const summary: string[] = [];
  for (const [ds, rs] of byDs) {
    const base = rs.find((r) => r.ot === "none");
    if (!base) continue;
    for (const r of rs) {
      if (r === base) continue;
      const e = (x: TableRow, k: number) => x.euler.find((q) => q.steps === k);
      const few = Math.min(...eulerSteps), many = Math.max(...eulerSteps);
      const ratio = (a: number, b: number) => (b > 0 ? `${(a / b).toFixed(2)}×` : "n/a");
      summary.push(
        `- ${ds}, ${r.ot} vs none: W2 at Euler ${few} ${f4(e(r, few)?.w2 ?? NaN)} vs ${
          f4(e(base, few)?.w2 ?? NaN)
        } (${ratio(e(r, few)?.w2 ?? NaN, e(base, few)?.w2 ?? NaN)}), at Euler ${many} ${
          f4(e(r, many)?.w2 ?? NaN)
        } vs ${f4(e(base, many)?.w2 ?? NaN)}; dopri5 NFE ${r.dopri5.nfe} vs ${base.dopri5.nfe}; ` +
          `straightness ${f4(r.straightness)} vs ${f4(base.straightness)}; ` +
          `training ${r.trainSeconds.toFixed(0)} s vs ${base.trainSeconds.toFixed(0)} s.`,
      );
    }
  }
  if (summary.length) {
    L.push(
      "## Summary (generated from the rows below)",
      "",
      ...summary,
      "",
      "Seed 003 claims OT gives straighter paths and better few-step samples: compare the " +
        "Euler 1–4 columns, dopri5 NFE and S. One training seed and one evaluation seed per " +
        "row, no error bars; the data floor shows each metric's own sampling noise at this " +
        "sample size.",
      "",
    );
  }
  L.push("## W2 (lower is better)", "");
  L.push(
    `| dataset | coupling | ${
      eulerSteps.map((s) => `Euler ${s}`).join(" | ")
    } | dopri5 | data floor |`,
    `|---|---|${eulerSteps.map(() => "---:").join("|")}|---:|---:|`,
  );
  for (const [ds, rs] of byDs) {
    for (const r of rs) {
      L.push(
        `| ${ds} | ${r.ot} | ${r.euler.map((e) => f4(e.w2)).join(" | ")} | ${f4(r.dopri5.w2)} | ${
          floors[ds] ? f4(floors[ds].w2) : "n/a"
        } |`,
      );
    }
  }
  L.push("", "## Histogram KL (lower is better)", "");
  L.push(
    `| dataset | coupling | ${
      eulerSteps.map((s) => `Euler ${s}`).join(" | ")
    } | dopri5 | data floor |`,
    `|---|---|${eulerSteps.map(() => "---:").join("|")}|---:|---:|`,
  );
  for (const [ds, rs] of byDs) {
    for (const r of rs) {
      L.push(
        `| ${ds} | ${r.ot} | ${r.euler.map((e) => f4(e.kl)).join(" | ")} | ${f4(r.dopri5.kl)} | ${
          floors[ds] ? f4(floors[ds].kl) : "n/a"
        } |`,
      );
    }
  }
  L.push("", "## Paths and cost", "");
  L.push(
    "| dataset | coupling | dopri5 NFE (atol = rtol = 1e-5) | straightness S (Euler 100) | length ratio | distinct noise rows per batch | final loss | train s | eval s |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|",
  );
  for (const [ds, rs] of byDs) {
    for (const r of rs) {
      L.push(
        `| ${ds} | ${r.ot} | ${r.dopri5.nfe} | ${f4(r.straightness)} | ${
          r.lengthRatio.toFixed(4)
        } | ${
          pairing[`${ds}/${r.ot}`] === undefined
            ? "n/a"
            : `${(100 * pairing[`${ds}/${r.ot}`]!).toFixed(0)}%`
        } | ${f4(r.finalLoss)} | ${r.trainSeconds.toFixed(0)} | ${r.evalSeconds.toFixed(0)} |`,
      );
    }
  }
  L.push(
    "",
    "S = E ∫ ‖(x1 − x0) − v_t‖² dt over the sampled Euler-100 polyline (0 for straight, " +
      "constant-speed paths; Liu et al. 2022 eq. 5); length ratio = path length / displacement. " +
      "Distinct noise rows per batch: the share of the batch's N(0, I) draws that the coupling " +
      "actually pairs with data (mean over 5 batches). `none` and `exact` are permutations " +
      "(100%); `argmax` may pick one noise row for many data points, which changes the source " +
      "distribution the model is trained to transport from.",
    "",
    "## Commands",
    "",
    "Each row is reproduced by its training command followed by its evaluation commands " +
      "(prefix every command with `FLOWGPU_BACKEND=webgpu` to use the WebGPU adapter). The " +
      "whole table: `FLOWGPU_BACKEND=webgpu deno task cfm:table` (none and exact on three toys) " +
      "followed by `FLOWGPU_BACKEND=webgpu deno task cfm:table --datasets 8gaussians,moons " +
      "--ot-methods argmax` (rows accumulate in `runs/cfm-table/results.jsonl`; " +
      "`--render-only` rewrites this file from it).",
    "",
    "```sh",
  );
  for (const r of rows) {
    L.push(`# ${r.dataset} / ${r.ot}`, r.trainCommand, ...r.evalCommands, "");
  }
  L.push("```", "");
  const total = rows.reduce((a, r) => a + r.trainSeconds + r.evalSeconds, 0);
  L.push(
    `Total measured wall time (training + evaluation of all rows): ${total.toFixed(0)} s ` +
      `(${(total / 60).toFixed(1)} min) on a 2-core machine shared with other jobs.`,
    "",
  );
  return L.join("\n");
}

/**
 * Run the table; returns the rows measured in this invocation (or `null` for `--help`).
 *
 * @example
 * ```ts
 * import { main } from "./cfm_table.ts";
 * console.log(await main(["--help"])); // prints the usage, then null
 * ```
 */
export async function main(argv: readonly string[]): Promise<TableRow[] | null> {
  await init();
  let help = false;
  const f = parseFlags(argv, CFM_TABLE_FLAGS, {
    task: "cfm:table",
    usage: "Measure CFM vs OT-CFM on 2-D toys and write the markdown table.",
    onHelp: (t) => {
      console.log(t);
      help = true;
    },
  });
  if (help) return null;
  const datasets = list("--datasets", f.datasets).map((d) => {
    if (d === "fashion-mnist" || !(CFM_DATASETS as readonly string[]).includes(d)) {
      throw new RangeError(`Unknown 2-D dataset "${d}" in --datasets`);
    }
    return d as CfmDataset;
  });
  const ots = list("--ot-methods", f.otMethods).map((o) => {
    if (!(OT_METHODS as readonly string[]).includes(o)) {
      throw new RangeError(
        `Unknown coupling "${o}" in --ot-methods: expected ${OT_METHODS.join(", ")}`,
      );
    }
    return o;
  });
  const eulerSteps = list("--euler-steps", f.eulerSteps).map((s) => {
    const k = Number(s);
    if (!Number.isInteger(k) || k < 1) {
      throw new RangeError(`Bad step count "${s}" in --euler-steps`);
    }
    return k;
  });
  const adapter = await adapterName();
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
      floors[d] ??= await floor(d, rows[0]!.numSamples, rows[0]!.seed);
    }
    await fillPairing(rows, pairing);
    await Deno.writeTextFile(f.out, renderMarkdown(rows, floors, pairing));
    console.log(`table: ${f.out} (${rows.length} rows re-rendered)`);
    return [];
  }
  const t00 = performance.now();
  for (const ds of datasets) {
    for (const ot of ots) {
      const exp = `${ds}-${ot}-s${f.seed}`;
      const trainArgs = [
        "--dataset",
        ds,
        "--ot",
        ot,
        "--max-train-steps",
        String(f.maxTrainSteps),
        "--batch-size",
        String(f.batchSize),
        "--hidden",
        String(f.hidden),
        "--depth",
        String(f.depth),
        "--lr",
        String(f.lr),
        "--seed",
        String(f.seed),
        "--log-every",
        "250",
        "--checkpoint-every",
        String(f.maxTrainSteps),
        "--output-dir",
        f.outputDir,
        "--exp-name",
        exp,
      ];
      await Deno.remove(`${f.outputDir}/${exp}`, { recursive: true }).catch(() => {});
      const t0 = performance.now();
      const tr = await trainMain(trainArgs);
      const trainSeconds = (performance.now() - t0) / 1000;
      const t1 = performance.now();
      const ck = await resolveCheckpoint(tr!.runDir);
      const common = { numSamples: f.numSamples, seed: f.seed, useEma: true };
      const evalCmd = (extra: string) =>
        `deno task eval --checkpoint ${f.outputDir}/${exp} --num-samples ${f.numSamples} --seed ${f.seed} ${extra}`;
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
        seed: f.seed,
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
      };
      fresh.push(row);
      // Replace an older row of the same (dataset, coupling, seed, steps), keep the rest.
      const rows = (await readRows()).filter((r) =>
        !(r.dataset === ds && r.ot === ot && r.seed === f.seed && r.steps === f.maxTrainSteps)
      );
      rows.push(row);
      await Deno.writeTextFile(resultsPath, rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
      for (const d of new Set(rows.map((r) => r.dataset))) {
        floors[d] ??= await floor(d, f.numSamples, f.seed);
      }
      await fillPairing(rows, pairing);
      await Deno.writeTextFile(f.out, renderMarkdown(rows, floors, pairing));
      console.error(
        `cfm_table: ${ds}/${ot}: train ${trainSeconds.toFixed(0)} s, W2 euler-${
          euler.map((e) => `${e.steps}:${e.w2.toFixed(3)}`).join(" ")
        }, dopri5 NFE ${dp.nfe}, S ${row.straightness.toFixed(4)}`,
      );
    }
  }
  console.log(`table: ${f.out} (${((performance.now() - t00) / 1000).toFixed(0)} s)`);
  return fresh;
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    if (e instanceof RangeError || e instanceof TypeError) {
      console.error(`cfm_table: ${e.message}`);
      Deno.exit(2);
    }
    throw e;
  }
}
