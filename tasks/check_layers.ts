/**
 * @file `deno task check:layers`: the import graph must be acyclic and every value import must
 * point to a lower layer (or stay inside its own group). Type-only imports (`import type`) may
 * point anywhere: they vanish at run time. The graph comes from `deno info --json` over every
 * entry point, so it sees exactly what Deno resolves.
 * @module
 */
import { formatUsage, parseFlags } from "../cli/mod.ts";

/**
 * The layers, lowest first. A module in a group may import values from its own group and from
 * groups in lower layers only; groups in the same layer are siblings and may not import each
 * other. A path prefix ending in "/" names a directory, else one file.
 */
export const LAYERS: readonly (readonly string[])[] = [
  ["lib/_util.ts"],
  // Pure helpers with no GPU and no Tensor: shapes, the elementwise op IR, Philox, file formats.
  ["lib/shape.ts|lib/dtype.ts|lib/ir.ts|lib/philox.ts|lib/capture.ts", "lib/formats/"],
  ["lib/device/"],
  ["kernels/"],
  ["lib/backend/"],
  // The engine: Tensor, its ops and autodiff. One group, so the check inside it is "no cycle".
  ["lib/tensor.ts|lib/ops/|lib/autodiff/"],
  ["lib/random.ts"],
  ["lib/nn/", "lib/optim/", "lib/ot/", "lib/io/"],
  ["lib/data/", "lib/flow/"],
  // Metrics evaluate flows on data (e.g. the Fisher divergence against a GMM's exact field).
  ["lib/metrics/"],
  ["lib/train/"],
  ["mod.ts"],
  ["viz/", "cli/"],
  ["tasks/", "examples/", "bench/"],
];

/** A value import that breaks the layering, or a module no layer claims. */
export interface LayerProblem {
  /** "upward", "sibling", "unassigned" or "cycle". */
  kind: "upward" | "sibling" | "unassigned" | "cycle";
  /** Human-readable description with the file names. */
  message: string;
}

/** Which group (and layer index) a repository-relative path belongs to, or null. */
export function groupOf(path: string): { group: string; layer: number } | null {
  for (let l = 0; l < LAYERS.length; l++) {
    for (const group of LAYERS[l]!) {
      for (const p of group.split("|")) {
        if (p.endsWith("/") ? path.startsWith(p) : path === p) return { group, layer: l };
      }
    }
  }
  return null;
}

/**
 * Check a graph of value imports (`from → to[]`, repository-relative paths).
 *
 * @example
 * ```ts
 * import { checkGraph } from "./check_layers.ts";
 * import { strict as assert } from "node:assert";
 * const bad = checkGraph(new Map([["lib/shape.ts", ["lib/nn/module.ts"]], ["lib/nn/module.ts", []]]));
 * assert.equal(bad[0]!.kind, "upward");
 * assert.deepEqual(checkGraph(new Map([["lib/nn/a.ts", ["lib/shape.ts"]], ["lib/shape.ts", []]])), []);
 * ```
 */
export function checkGraph(edges: ReadonlyMap<string, readonly string[]>): LayerProblem[] {
  const problems: LayerProblem[] = [];
  for (const [from, tos] of edges) {
    const a = groupOf(from);
    if (!a) {
      problems.push({
        kind: "unassigned",
        message: `${from} belongs to no layer (tasks/check_layers.ts LAYERS)`,
      });
      continue;
    }
    for (const to of tos) {
      const b = groupOf(to);
      if (!b) continue; // reported once as its own `from`
      if (b.layer > a.layer) {
        problems.push({
          kind: "upward",
          message: `${from} (layer ${a.layer}) imports ${to} (layer ${b.layer})`,
        });
      } else if (b.layer === a.layer && b.group !== a.group) {
        problems.push({
          kind: "sibling",
          message: `${from} imports its sibling ${to} (both layer ${a.layer})`,
        });
      }
    }
  }
  for (const cycle of cycles(edges)) {
    problems.push({ kind: "cycle", message: `import cycle: ${[...cycle, cycle[0]].join(" → ")}` });
  }
  return problems;
}

/** Strongly connected components with more than one module (or a self-import), via Tarjan. */
export function cycles(edges: ReadonlyMap<string, readonly string[]>): string[][] {
  let next = 0;
  const index = new Map<string, number>(), low = new Map<string, number>();
  const stack: string[] = [], onStack = new Set<string>(), out: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1 || (edges.get(v) ?? []).includes(v)) out.push(comp.reverse());
    }
  };
  for (const v of edges.keys()) if (!index.has(v)) visit(v);
  return out;
}

interface InfoModule {
  specifier: string;
  dependencies?: { code?: { specifier: string } }[];
}

/** The value-import graph of the repository, from `deno info --json` over `entries`. */
async function loadGraph(root: URL, entries: readonly string[]): Promise<Map<string, string[]>> {
  const edges = new Map<string, string[]>();
  const rel = (s: string) => s.startsWith(root.href) ? s.slice(root.href.length) : null;
  for (const entry of entries) {
    const out = await new Deno.Command("deno", {
      args: ["info", "--json", entry],
      cwd: root,
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(`deno info ${entry} failed: ${new TextDecoder().decode(out.stderr)}`);
    }
    const info = JSON.parse(new TextDecoder().decode(out.stdout)) as { modules: InfoModule[] };
    for (const m of info.modules) {
      const from = rel(m.specifier);
      if (from === null || edges.has(from)) continue;
      const tos = (m.dependencies ?? []).map((d) => d.code && rel(d.code.specifier))
        .filter((s): s is string => typeof s === "string" && /\.(ts|js)$/.test(s));
      edges.set(from, [...new Set(tos)]);
    }
  }
  return edges;
}

const FLAGS = [{ name: "root", type: "string", default: ".", help: "Repository root" }] as const;

/** Run the check; returns the problems (also printed). */
export async function main(argv: readonly string[]): Promise<LayerProblem[] | null> {
  const f = parseFlags(argv, FLAGS, {
    task: "check:layers",
    usage: "Fail on an import cycle or an import that points to a higher layer.",
  });
  if (!f) return null;
  const root = new URL(`${Deno.realPathSync(f.root)}/`, "file://");
  const entries = ["mod.ts", "viz/mod.ts", "cli/mod.ts"];
  for (const dir of ["tasks", "examples", "bench"]) {
    for (const e of Deno.readDirSync(new URL(dir, root))) {
      if (e.isFile && e.name.endsWith(".ts")) entries.push(`${dir}/${e.name}`);
    }
  }
  const edges = await loadGraph(root, entries);
  const problems = checkGraph(edges);
  for (const p of problems) console.error(`check:layers: ${p.kind}: ${p.message}`);
  const n = (k: string) => problems.filter((p) => p.kind === k).length;
  console.log(
    `check:layers: ${edges.size} modules, ${n("cycle")} cycles, ${
      n("upward") + n("sibling")
    } layer violations, ${n("unassigned")} unassigned`,
  );
  return problems;
}

if (import.meta.main) {
  const problems = await main(Deno.args).catch((e) => {
    console.error(`check:layers: ${(e as Error).message}\n${formatUsage(FLAGS)}`);
    Deno.exit(2);
  });
  if (problems && problems.length > 0) Deno.exit(1);
}
