/**
 * @file `deno task mutate`: apply deliberate bugs, one at a time, to a temporary copy of the
 * repository and run the tests that should catch each; report which mutants survive. The list
 * is the one issue 19 found surviving (kept current as the code moves: the EMA update of
 * train:cfm and train:stablevm is one line of the shared loop now, so those two are one
 * mutant) plus NaN propagation in `maximum`. A mutant whose target text is missing fails the
 * run: the list must follow the code.
 *
 *   deno task mutate                 # every mutant (several minutes on 2 cores)
 *   deno task mutate --only ema-update,ot-unused
 * @module
 */
import { parseFlags, runTask } from "../cli/mod.ts";

/** One deliberate bug: replace `find` (which must occur exactly once) in `file`. */
export interface Mutant {
  /** Short name. */
  name: string;
  /** Repository-relative file. */
  file: string;
  /** Text to replace (exactly one occurrence). */
  find: string;
  /** Replacement. */
  replace: string;
  /** Test files that must fail with the mutant applied. */
  tests: string[];
}

/** The mutants (issue 19's eight, at their current places, plus NaN ordering and the Fisher average). */
export const MUTANTS: readonly Mutant[] = [
  {
    name: "dopri5-error-weight",
    file: "lib/flow/samplers.ts",
    find: "11 / 84 - 187 / 2100,",
    replace: "11 / 84 - 187 / 2000,",
    tests: ["tests/unit/samplers_test.ts"],
  },
  {
    name: "ema-update", // issue 19's #2 and #4: every trainer, eager or traced, shares this line
    file: "lib/train/fit.ts",
    find: "ema?.update(params);",
    replace: "void params;",
    tests: ["tests/unit/train_test.ts"],
  },
  {
    name: "stablevm-ascent",
    file: "lib/train/stablevm.ts",
    find: 'if (c.lossType === "stablevm") return withRepa(stableVmLoss(field, o));',
    replace: 'if (c.lossType === "stablevm") return { loss: stableVmLoss(field, o).loss.mul(-1) };',
    tests: ["tests/tasks/objectives_test.ts"],
  },
  {
    name: "ot-unused",
    file: "lib/train/cfm.ts",
    find: "cur.coupling = cp;",
    replace: "void cp;",
    tests: ["tests/tasks/objectives_test.ts"],
  },
  {
    name: "gmm-ascent",
    file: "lib/train/gmm.ts",
    find: 'return { loss: kind === "score" ? mean(mul(err, square(sub(1, tc)))) : mean(err) };',
    replace:
      'return { loss: (kind === "score" ? mean(mul(err, square(sub(1, tc)))) : mean(err)).mul(-1) };',
    tests: ["tests/tasks/objectives_test.ts"],
  },
  {
    name: "adaln-scale-shift-swap",
    file: "lib/nn/velocity.ts",
    find: "const [scale, shift] = split(this.fc.forward(cond), [h, h], 1) as [Tensor, Tensor];",
    replace: "const [shift, scale] = split(this.fc.forward(cond), [h, h], 1) as [Tensor, Tensor];",
    tests: ["tests/unit/torch_equiv_test.ts", "tests/unit/torch_fixture_test.ts"],
  },
  {
    name: "adaln-label-dropped",
    file: "lib/nn/velocity.ts",
    find: "? e.add(this.yEmbedder.forward(y ?? this.yEmbedder.nullLabels(x.shape[0]!)))",
    replace: "? e.add(this.yEmbedder.forward(y ?? this.yEmbedder.nullLabels(x.shape[0]!)).mul(0))",
    tests: ["tests/unit/torch_equiv_test.ts", "tests/unit/torch_fixture_test.ts"],
  },
  {
    name: "maximum-nan-order",
    file: "lib/ir.ts",
    find: "cpu: (a, b) => (Number.isNaN(a) ? a : Number.isNaN(b) ? b : a >= b ? a : b),",
    replace: "cpu: (a, b) => (a >= b ? a : b),", // the old rule: maximum(NaN, 1) = 1
    tests: ["tests/gpu/op_table_special_test.ts"],
  },
  {
    name: "fisher-average", // issue 19: the Fisher log once only had to be "finite and > 0"
    file: "lib/metrics/fisher.ts",
    find: "out.push({ t, value: total / n });",
    replace: "out.push({ t, value: total / (n - 1) });",
    tests: ["tests/tasks/gmm_test.ts"],
  },
];

const FLAGS = [
  { name: "only", type: "string", help: "comma-separated mutant names (default: all)" },
  { name: "list", type: "bool", help: "list the mutants and exit" },
] as const;

const PERMS = [
  "--allow-read=.,/tmp,/usr/share/datasets",
  "--allow-write=/tmp",
  "--allow-env",
  "--allow-run=deno,/usr/bin/python3,/usr/bin/torchrun",
  "--allow-net=127.0.0.1",
];

async function copyRepo(src: string): Promise<string> {
  const dst = await Deno.makeTempDir({ prefix: "flowgpu-mutant-" });
  for await (const e of Deno.readDir(src)) {
    if ([".git", "runs", "dist", "node_modules"].includes(e.name)) continue;
    const out = await new Deno.Command("cp", { args: ["-r", `${src}/${e.name}`, dst] }).output();
    if (!out.success) throw new Error(`copying ${e.name} failed`);
  }
  return dst;
}

/** Apply each mutant to a fresh copy and run its tests; returns name → killed. */
export async function runMutants(
  root: string,
  mutants: readonly Mutant[],
  log: (line: string) => void = console.log,
): Promise<Record<string, boolean>> {
  const result: Record<string, boolean> = {};
  for (const m of mutants) {
    const dir = await copyRepo(root);
    try {
      const path = `${dir}/${m.file}`;
      const src = await Deno.readTextFile(path);
      const n = src.split(m.find).length - 1;
      if (n !== 1) {
        throw new RangeError(`mutant ${m.name}: expected one "${m.find}" in ${m.file}, found ${n}`);
      }
      await Deno.writeTextFile(path, src.replace(m.find, m.replace));
      const t0 = performance.now();
      const out = await new Deno.Command("deno", {
        args: ["test", "--quiet", ...PERMS, ...m.tests],
        cwd: dir,
        env: { FLOWGPU_BACKEND: Deno.env.get("FLOWGPU_BACKEND") ?? "webgpu", NO_COLOR: "1" },
        stdout: "null",
        stderr: "null",
      }).output();
      result[m.name] = !out.success;
      const s = ((performance.now() - t0) / 1000).toFixed(0);
      log(`${out.success ? "SURVIVED" : "killed  "} ${m.name} (${m.tests.join(" ")}, ${s} s)`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
  return result;
}

/** Run the task; returns name → killed (or null for --help/--list). */
export async function main(argv: readonly string[]): Promise<Record<string, boolean> | null> {
  const f = parseFlags(argv, FLAGS, {
    task: "mutate",
    usage: "Deliberate bugs the tests must catch.",
  });
  if (f.list) {
    for (const m of MUTANTS) console.log(`${m.name}: ${m.file} → ${m.tests.join(", ")}`);
    return null;
  }
  const names = f.only?.split(",").map((s) => s.trim()).filter(Boolean);
  const unknown = names?.filter((n) => !MUTANTS.some((m) => m.name === n)) ?? [];
  if (unknown.length) {
    throw new RangeError(
      `Unknown mutant ${unknown.join(", ")}: expected one of ${
        MUTANTS.map((m) => m.name).join(", ")
      }`,
    );
  }
  const chosen = names ? MUTANTS.filter((m) => names.includes(m.name)) : MUTANTS;
  const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
  const result = await runMutants(root, chosen);
  const survived = Object.entries(result).filter(([, k]) => !k).map(([n]) => n);
  console.log(
    JSON.stringify({ mutants: chosen.length, killed: chosen.length - survived.length, survived }),
  );
  if (survived.length) {
    throw Object.assign(new Error(`${survived.length} mutant(s) survived`), { exitCode: 1 });
  }
  return result;
}

if (import.meta.main) await runTask("mutate", main);
