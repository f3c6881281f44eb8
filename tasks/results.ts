/**
 * @file `deno task results [--quick]` — rerun every results table of the README and docs/ and
 * rewrite them: seed 003's CFM vs OT-CFM (`cfm:table`), seed 002's Fisher table (`gmm:table`),
 * seed 000's shortcut/locality table (`shortcut:table`), seed 004's flow-map KL table
 * (`flowmap:table`), issue 14's CFM vs StableVM vs StableVM + VA-REPA image table
 * (`images:table`), and `train:images`'s preset over seeds (`images:preset`). Every table runs ≥ 3 seeds and reports
 * mean ± std; its JSON (rows with the commit each ran on) is written beside its markdown in
 * docs/, and the README's tables between `<!-- results:NAME -->` markers are regenerated from
 * that JSON, so the README cannot drift from what the command produced. `docs/results.json`
 * indexes the tables with the commit and time of this invocation.
 *
 * `--quick` runs the same pipeline with tiny budgets (a few dozen steps, 3 seeds) into
 * `--out-dir` and leaves docs/ and the README alone (the README blocks it would write go to
 * `<out-dir>/README.blocks.md`): a check that the pipeline works, not results.
 *
 *   deno task results                  # everything: hours on the 2-core CPU adapter (the
 *                                      # flow-map runs are 20k steps each; they resume)
 *   deno task results --only gmm       # one table
 *   deno task results --render-only    # README blocks from the committed docs/*.json
 *   deno task results --quick          # minutes; writes under /tmp/flowgpu-results-quick
 * @module
 */
import {
  type FlagSpec,
  gitCommit,
  parseList,
  parseTaskFlags,
  replaceBlock,
  runTask,
} from "../cli/mod.ts";
import { main as cfmTableMain } from "./cfm_table.ts";
import { main as gmmTableMain } from "./gmm_table.ts";
import { main as shortcutTableMain } from "./shortcut_table.ts";
import { main as flowmapTableMain } from "./flowmap_table.ts";
import { main as imagesTableMain } from "./images_table.ts";
import { main as imagesPresetMain } from "./images_preset.ts";
import {
  outPath,
  readmeBlock,
  tableArgs,
  type TableName,
  TABLES,
  tableTask,
} from "../cli/tables/readme.ts";

export { readmeBlock, type TableName, TABLES } from "../cli/tables/readme.ts";

/**
 * The flags.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { RESULTS_FLAGS } from "./results.ts";
 * assert.equal(
 *   RESULTS_FLAGS.find((f) => f.name === "only")?.default,
 *   "gmm,cfm,shortcut,shortcut-fmnist,flowmap,images,images-preset",
 * );
 * ```
 */
export const RESULTS_FLAGS = [
  { name: "quick", type: "bool", help: "tiny budgets into --out-dir; docs/ and README untouched" },
  { name: "only", type: "string", default: TABLES.join(","), help: "tables to run" },
  { name: "render-only", type: "bool", help: "only rewrite the README blocks from docs/*.json" },
  {
    name: "out-dir",
    type: "string",
    default: "/tmp/flowgpu-results-quick",
    help: "where --quick writes (runs, tables, README blocks)",
  },
  { name: "readme", type: "string", default: "README.md", help: "the README to update" },
] as const satisfies readonly FlagSpec[];

/**
 * Run the tables; returns the index written to `results.json` (or `null` for `--help`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { main } from "./results.ts";
 * assert.equal(await main(["--help"]), null); // after printing the usage
 * ```
 */
export async function main(argv: readonly string[]): Promise<Record<string, unknown> | null> {
  const f = parseTaskFlags(argv, RESULTS_FLAGS, {
    task: "results",
    usage: "Rerun every results table (≥ 3 seeds, mean ± std) and regenerate the README's.",
  });
  if (!f) return null;
  const only = parseList("--only", f.only, TABLES) as TableName[];
  if (f.quick) await Deno.mkdir(f.outDir, { recursive: true });
  const started = new Date().toISOString(), commit = await gitCommit();
  const index: Record<string, unknown> = { started, commit, quick: f.quick, tables: {} };
  const mains = {
    gmm: gmmTableMain,
    cfm: cfmTableMain,
    shortcut: shortcutTableMain,
    "shortcut-fmnist": shortcutTableMain,
    flowmap: flowmapTableMain,
    images: imagesTableMain,
    "images-preset": imagesPresetMain,
  };
  for (const t of only) {
    const args = tableArgs(t, f.quick, f.outDir);
    const md = outPath(t, f.quick, f.outDir);
    if (!f.renderOnly) {
      console.error(`results: ${t} table: deno task ${tableTask(t)} ${args.join(" ")}`);
      const t0 = performance.now();
      await mains[t](args);
      console.error(`results: ${t} done in ${((performance.now() - t0) / 60000).toFixed(1)} min`);
    }
    (index.tables as Record<string, unknown>)[t] = {
      markdown: md,
      json: md.replace(/\.md$/, "") + ".json",
      command: `deno task ${tableTask(t)} ${args.join(" ")}`,
    };
  }
  // Markdown tables as deno fmt writes them, so `deno fmt --check` stays green.
  const fmtTargets = only.map((t) => outPath(t, f.quick, f.outDir));
  const blocks: string[] = [];
  let readme = f.quick ? "" : await Deno.readTextFile(f.readme);
  for (const t of only) {
    const block = await readmeBlock(t, outPath(t, f.quick, f.outDir));
    if (f.quick) blocks.push(`<!-- results:${t} -->\n${block}\n<!-- /results:${t} -->\n`);
    else readme = replaceBlock(readme, t, block);
  }
  index.finished = new Date().toISOString();
  const indexPath = f.quick ? `${f.outDir}/results.json` : "docs/results.json";
  if (f.quick) {
    await Deno.writeTextFile(`${f.outDir}/README.blocks.md`, blocks.join("\n"));
    fmtTargets.push(`${f.outDir}/README.blocks.md`);
  } else {
    // Keep the other tables' entries of an earlier invocation (e.g. after --only gmm).
    let old: { tables?: Record<string, unknown> } = {};
    try {
      old = JSON.parse(await Deno.readTextFile(indexPath));
    } catch { /* first run */ }
    index.tables = { ...(old.tables ?? {}), ...(index.tables as Record<string, unknown>) };
    await Deno.writeTextFile(f.readme, readme);
    fmtTargets.push(f.readme);
  }
  await Deno.writeTextFile(indexPath, JSON.stringify(index, null, 2) + "\n");
  const fmt = await new Deno.Command("deno", {
    args: ["fmt", "--quiet", ...fmtTargets],
    stdout: "null",
    stderr: "inherit",
  }).output();
  if (!fmt.success) throw new Error(`deno fmt failed on ${fmtTargets.join(" ")}`);
  console.log(`results: ${fmtTargets.join(", ")}; index ${indexPath}`);
  return index;
}

if (import.meta.main) await runTask("results", main);
