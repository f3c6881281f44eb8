/**
 * @file `deno task results [--quick]` — rerun every results table of the README and docs/ and
 * rewrite them: seed 003's CFM vs OT-CFM (`cfm:table`), seed 002's Fisher table (`gmm:table`),
 * seed 000's shortcut/locality table (`shortcut:table`), seed 004's flow-map KL table
 * (`flowmap:table`). Every table runs ≥ 3 seeds and reports
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
  fmtMeanStd,
  gitCommit,
  parseList,
  parseTaskFlags,
  replaceBlock,
  runTask,
} from "../cli/mod.ts";
import { main as cfmTableMain } from "./cfm_table.ts";
import { main as gmmTableMain } from "./gmm_table.ts";
import { main as shortcutTableMain } from "./shortcut_table.ts";
import { cfmSummary, cfmTable, type TableRow } from "./_cfm_table.ts";
import { type GmmRow, gmmTable, gmmVerdict } from "./_gmm_table.ts";
import { main as flowmapTableMain } from "./flowmap_table.ts";
import { type FlowMapRow, flowMapTable } from "./_flowmap_table.ts";

/** The tables `results` knows, in the order it runs them. */
export const TABLES = ["gmm", "cfm", "shortcut", "shortcut-fmnist", "flowmap"] as const;

/** A table's name. */
export type TableName = typeof TABLES[number];

/**
 * The flags.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { RESULTS_FLAGS } from "./results.ts";
 * assert.equal(
 *   RESULTS_FLAGS.find((f) => f.name === "only")?.default,
 *   "gmm,cfm,shortcut,shortcut-fmnist,flowmap",
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

/** Where each table's markdown goes (its JSON beside it). */
function outPath(t: TableName, quick: boolean, dir: string): string {
  const base = {
    gmm: "gmm_results",
    cfm: "cfm_results",
    shortcut: "shortcut_results",
    "shortcut-fmnist": "shortcut_results_fmnist",
    flowmap: "flowmap_table",
  }[t];
  return quick ? `${dir}/${base}.md` : `docs/${base}.md`;
}

/** The arguments each table runs with (quick: tiny budgets, still 3 seeds). */
function tableArgs(t: TableName, quick: boolean, dir: string): string[] {
  const out = ["--out", outPath(t, quick, dir)];
  const runs = (name: string) => ["--output-dir", quick ? `${dir}/runs-${name}` : `runs/${name}`];
  if (t === "gmm") {
    return [
      ...out,
      ...runs("gmm-table"),
      ...(quick
        ? ["--max-train-steps", "30", "--eval-every", "30", "--fisher-samples", "200"]
        : []),
    ];
  }
  if (t === "cfm") {
    return [
      ...out,
      ...runs("cfm-table"),
      "--ot-methods",
      "none,exact,argmax",
      ...(quick
        ? ["--datasets", "8gaussians", "--max-train-steps", "30", "--num-samples", "200"]
        : []),
    ];
  }
  if (t === "flowmap") {
    return [
      ...out,
      ...runs("flowmap-table"),
      ...(quick ? ["--max-train-steps", "20", "--eval-samples", "2000"] : []),
    ];
  }
  if (t === "shortcut-fmnist") {
    return [
      ...out,
      "--dataset",
      "fashion-mnist",
      ...runs("shortcut-table-fmnist"),
      ...(quick
        ? ["--max-train-steps", "20", "--eval-samples", "200", "--cluster-samples", "500"]
        : []),
    ];
  }
  return [
    ...out,
    ...runs("shortcut-table"),
    ...(quick
      ? ["--max-train-steps", "30", "--eval-samples", "200", "--cluster-samples", "200"]
      : []),
  ];
}

/** The shortcut table's README block, from its JSON rows. */
function shortcutBlock(
  rows: { variant: string; w2: Record<string, number>; straightness: number }[],
) {
  const names: Record<string, string> = {
    untrained: "untrained",
    shortcut: "shortcut",
    "anchor-labels": "+ anchor (labels)",
    "anchor-clusters": "+ anchor (k-means, 16)",
    locality: "+ locality",
  };
  const steps = [1, 2, 4, 8];
  const L = [
    `| variant | seeds | ${steps.map((n) => `W2 @ ${n}`).join(" | ")} | straightness |`,
    `| --- | ---: | ${steps.map(() => "---").join(" | ")} | --- |`,
  ];
  for (const v of Object.keys(names)) {
    const rs = rows.filter((r) => r.variant === v);
    if (!rs.length) continue;
    L.push(
      `| ${names[v]} | ${rs.length} | ${
        steps.map((n) => fmtMeanStd(rs.map((r) => r.w2[n]!))).join(" | ")
      } | ${fmtMeanStd(rs.map((r) => r.straightness))} |`,
    );
  }
  return L.join("\n");
}

/** The Fashion-MNIST shortcut table's README block: FD and class agreement at 1 and 8 steps. */
function fmnistBlock(
  rows: { variant: string; fd: Record<string, number>; classAcc: Record<string, number> }[],
) {
  const names: Record<string, string> = {
    untrained: "untrained",
    shortcut: "shortcut",
    "anchor-labels": "+ anchor (labels)",
    "anchor-clusters": "+ anchor (k-means)",
    locality: "+ locality",
  };
  const L = [
    "| variant | seeds | FD @ 1 | FD @ 8 | class agreement @ 1 | class agreement @ 8 |",
    "| --- | ---: | --- | --- | --- | --- |",
  ];
  for (const v of Object.keys(names)) {
    const rs = rows.filter((r) => r.variant === v);
    if (!rs.length) continue;
    L.push(
      `| ${names[v]} | ${rs.length} | ${fmtMeanStd(rs.map((r) => r.fd["1"]!), 1)} | ${
        fmtMeanStd(rs.map((r) => r.fd["8"]!), 1)
      } | ${fmtMeanStd(rs.map((r) => r.classAcc["1"]!))} | ${
        fmtMeanStd(rs.map((r) => r.classAcc["8"]!))
      } |`,
    );
  }
  return L.join("\n");
}

/**
 * The README block of table `t` from its JSON file (as the table task wrote it).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { readmeBlock } from "./results.ts";
 * const dir = await Deno.makeTempDir();
 * const row = { exp: "cfm", seed: 0, steps: 1, fisher: { "0.5": 2 }, curve: [], seconds: 1,
 *   command: "", commit: "abc" };
 * await Deno.writeTextFile(`${dir}/gmm_results.json`, JSON.stringify({ rows: [row] }));
 * assert.match(await readmeBlock("gmm", `${dir}/gmm_results.md`), /\| CFM \(`--exp cfm`\) \| 1 \| 2\.000 \|/);
 * ```
 */
export async function readmeBlock(t: TableName, mdPath: string): Promise<string> {
  const json = mdPath.replace(/\.md$/, "") + ".json";
  let d: { rows: unknown[]; pairing?: Record<string, number>; commit?: string };
  try {
    d = JSON.parse(await Deno.readTextFile(json));
  } catch (e) {
    throw new Error(`Cannot read the ${t} table's JSON ${json}: ${(e as Error).message}`);
  }
  const commits = [
    ...new Set((d.rows as { commit?: string }[]).map((r) => r.commit ?? d.commit ?? "?")),
  ].join(", ");
  const src = `<sub>Generated by \`deno task results\` from \`${json}\` (rows from commit(s) ` +
    `${commits}).</sub>`;
  if (t === "gmm") {
    const rows = d.rows as GmmRow[];
    return `${gmmTable(rows)}\n\n${gmmVerdict(rows)}\n\n${src}`;
  }
  if (t === "cfm") {
    const rows = d.rows as TableRow[];
    return `${cfmTable(rows, d.pairing ?? {})}\n\n${cfmSummary(rows).join("\n")}\n\n${src}`;
  }
  if (t === "flowmap") return `${flowMapTable(d.rows as FlowMapRow[])}\n\n${src}`;
  // deno-lint-ignore no-explicit-any
  if (t === "shortcut-fmnist") return `${fmnistBlock(d.rows as any)}\n\n${src}`;
  // deno-lint-ignore no-explicit-any
  return `${shortcutBlock(d.rows as any)}\n\n${src}`;
}

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
  };
  for (const t of only) {
    const args = tableArgs(t, f.quick, f.outDir);
    const md = outPath(t, f.quick, f.outDir);
    if (!f.renderOnly) {
      console.error(`results: ${t} table: deno task ${t}:table ${args.join(" ")}`);
      const t0 = performance.now();
      await mains[t](args);
      console.error(`results: ${t} done in ${((performance.now() - t0) / 60000).toFixed(1)} min`);
    }
    (index.tables as Record<string, unknown>)[t] = {
      markdown: md,
      json: md.replace(/\.md$/, "") + ".json",
      command: `deno task ${t}:table ${args.join(" ")}`,
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
