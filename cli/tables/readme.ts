/**
 * @file What `deno task results` knows of each table: where its markdown and JSON live, the
 * arguments it runs with (full or `--quick`), and the README block rendered from its JSON.
 * @module
 */
import { fmtMeanStd } from "../results.ts";
import { cfmSummary, cfmTable, type TableRow } from "./cfm.ts";
import { type GmmRow, gmmTable, gmmVerdict } from "./gmm.ts";
import { type FlowMapRow, flowMapTable } from "./flowmap.ts";
import { imagesGrids, type ImagesRow, imagesTable, imagesVerdict } from "./images.ts";
import { type PresetRow, presetTable } from "./images_preset.ts";

/** The tables `results` knows, in the order it runs them. */
export const TABLES = [
  "gmm",
  "cfm",
  "shortcut",
  "shortcut-fmnist",
  "flowmap",
  "images",
  "images-preset",
] as const;

/** A table's name. */
export type TableName = typeof TABLES[number];

/**
 * The `deno task` that makes table `t`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { tableTask } from "./readme.ts";
 * assert.equal(tableTask("gmm"), "gmm:table");
 * assert.equal(tableTask("shortcut-fmnist"), "shortcut:table"); // with --dataset fashion-mnist
 * assert.equal(tableTask("images-preset"), "images:preset");
 * ```
 */
export function tableTask(t: TableName): string {
  if (t === "shortcut-fmnist") return "shortcut:table";
  if (t === "images-preset") return "images:preset";
  return `${t}:table`;
}

/** Where each table's markdown goes (its JSON beside it). */
export function outPath(t: TableName, quick: boolean, dir: string): string {
  const base = {
    gmm: "gmm_results",
    cfm: "cfm_results",
    shortcut: "shortcut_results",
    "shortcut-fmnist": "shortcut_results_fmnist",
    flowmap: "flowmap_table",
    images: "images_table",
    "images-preset": "images_preset",
  }[t];
  return quick ? `${dir}/${base}.md` : `docs/${base}.md`;
}

/** The arguments each table runs with (quick: tiny budgets, still 3 seeds). */
export function tableArgs(t: TableName, quick: boolean, dir: string): string[] {
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
  if (t === "images") {
    return [
      ...out,
      ...runs("images-table"),
      ...(quick
        ? [
          ...["--max-train-steps", "10", "--batch-size", "16", "--hidden", "16", "--blocks", "1"],
          ...["--eval-samples", "100", "--eval-steps", "4", "--grid-steps", "4"],
        ]
        : []),
    ];
  }
  if (t === "images-preset") {
    return [
      ...out,
      ...runs("images-preset"),
      ...(quick
        ? ["--models", "velocity-mlp", "--max-train-steps", "3", "--eval-samples", "20"]
        : []),
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
 * import { readmeBlock } from "./readme.ts";
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
  ].join(", ") || "none yet";
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
  if (t === "images") {
    const rows = d.rows as ImagesRow[];
    const parts = [imagesTable(rows), imagesVerdict(rows), imagesGrids(rows), src];
    return parts.filter((x) => x).join("\n\n");
  }
  if (t === "images-preset") {
    const rows = d.rows as PresetRow[];
    const grids = rows.filter((r) => r.seed === 0 && r.grid).map((r) =>
      `![train:images ${r.model} class grid, seed 0](${r.grid})`
    );
    return [presetTable(rows), ...grids, src].join("\n\n");
  }
  // deno-lint-ignore no-explicit-any
  if (t === "shortcut-fmnist") return `${fmnistBlock(d.rows as any)}\n\n${src}`;
  // deno-lint-ignore no-explicit-any
  return `${shortcutBlock(d.rows as any)}\n\n${src}`;
}
