/**
 * @file A/B of the `wasm` backend's elementwise path: this checkout against another one
 * (`--base DIR`, e.g. `git worktree add --detach /tmp/ew-base <commit>`), both loaded in this
 * process and run alternately, so load from other jobs hits both. At the DiT bench's MLP size
 * ([3136, 512] = 1.6M elements, tokens [64·49, 128]):
 *
 * - `gelu_tanh fwd (ops)`: `nn.geluTanh` as the library runs it (one call per op before the
 *   `geluTanh` row of lib/ir.ts, one call since);
 * - `gelu_tanh fwd+bwd (ops)`: the same with its vjp;
 * - `gelu_tanh (one DAG)`: the forward as one expression (a kernel of ~40 vector ops);
 * - `bwd-like DAG (2 inputs)`: g·(½(1 + t) + ½x(1 − t²)·c·(1 + 3·0.044715x²)), t = tanh(…);
 * - `linear + bias + gelu`: [3136, 128]·[128, 512] with a bias + GELU matmul epilogue;
 *
 * and with `--step` whole DiT training steps (bench/cases/dit.ts; `--steps` a run). Prints one
 * JSON line per item (median and min wall and process CPU ms per call or step, for `base` and
 * `new`), then the load average.
 *
 *   deno run --allow-read=.,DIR --allow-sys=loadavg,cpus --allow-env=FLOWGPU_BACKEND \
 *     bench/elementwise_wasm_ab.ts --base DIR [--step]
 * @module
 */
import { parseArgs } from "node:util";
import type { Expr } from "../lib/ir.ts";
import { floats } from "./cases/common.ts";
import { alternate, summary } from "./_ab.ts";

const X: Expr = { kind: "input", index: 0 }, G: Expr = { kind: "input", index: 1 };
const k = (value: number): Expr => ({ kind: "const", value });
const mul = (a: Expr, b: Expr): Expr => ({ kind: "binary", op: "mul", a, b });
const add = (a: Expr, b: Expr): Expr => ({ kind: "binary", op: "add", a, b });
const sub = (a: Expr, b: Expr): Expr => ({ kind: "binary", op: "sub", a, b });
const C = Math.sqrt(2 / Math.PI);
const TANH: Expr = {
  kind: "unary",
  op: "tanh",
  x: mul(add(X, mul(mul(mul(X, X), X), k(0.044715))), k(C)),
  p0: 0,
  p1: 0,
};
/** ½x(1 + tanh(√(2/π)(x + 0.044715x³))) as one expression. */
const GELU_TANH: Expr = mul(X, { kind: "unary", op: "affine", x: TANH, p0: 0.5, p1: 0.5 });
/** Its derivative times g (two inputs). */
const GELU_TANH_BWD: Expr = mul(
  G,
  add(
    mul(k(0.5), add(k(1), TANH)),
    mul(
      mul(mul(k(0.5), X), sub(k(1), mul(TANH, TANH))),
      mul(k(C), add(k(1), mul(k(3 * 0.044715), mul(X, X)))),
    ),
  ),
);

// The slice of the library's API used here (both checkouts export it).
type Lib = typeof import("../mod.ts");

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      base: { type: "string" },
      rounds: { type: "string", default: "7" },
      reps: { type: "string", default: "3" },
      step: { type: "boolean", default: false },
      steps: { type: "string", default: "2" },
    },
  });
  if (!values.base) throw new Error("--base DIR: a checkout of the version to compare against");
  const baseDir = new URL(`${values.base.replace(/\/$/, "")}/`, `file://${Deno.cwd()}/`);
  const libs: [string, Lib, string][] = [
    ["base", await import(new URL("mod.ts", baseDir).href) as Lib, baseDir.href],
    ["new", await import("../mod.ts"), new URL("../", import.meta.url).href],
  ];
  const [M, N, K] = [3136, 512, 128];
  const n = M * N;
  // `per`: units a run does (the figures are per unit: per call, per training step).
  type Item = { name: string; run: () => void; per?: number };
  const variants: { label: string; items: Item[]; done: () => void }[] = [];
  for (const [label, lib, dir] of libs) {
    const be = await lib.init({ backend: "wasm" });
    if (be.name !== "wasm") throw new Error(`${label}: expected the wasm backend, got ${be.name}`);
    const x = lib.tensor(floats(n, 1, 2), [M, N]), g = lib.tensor(floats(n, 2, 2), [M, N]);
    const a = be.upload(floats(M * K, 3, 2)), w = be.upload(floats(K * N, 4, 2));
    const bias = be.upload(floats(N, 5, 2));
    const xs = be.upload(floats(n, 1, 2)), gs = be.upload(floats(n, 2, 2));
    const epi: Expr = {
      kind: "unary",
      op: "gelu",
      x: add(X, { kind: "input", index: 1 }),
      p0: 0,
      p1: 0,
    };
    const geom = {
      batch: 1,
      m: M,
      n: N,
      k: K,
      transA: false,
      transB: false,
      aBatchStride: 0,
      bBatchStride: 0,
    };
    const ew = (e: Expr, ins: typeof xs[]) => {
      for (const s of be.elementwise([e], ins, ins.map(() => [1]), [n])) be.free(s);
    };
    const items: Item[] = [
      { name: "gelu_tanh fwd (ops)", run: () => lib.nn.geluTanh(x).dispose() },
      {
        name: "gelu_tanh fwd+bwd (ops)",
        run: () =>
          lib.tidy(() => {
            const [, back] = lib.vjp(lib.nn.geluTanh, x);
            back(g);
          }),
      },
      { name: "gelu_tanh (one DAG)", run: () => ew(GELU_TANH, [xs]) },
      { name: "bwd-like DAG (2 inputs)", run: () => ew(GELU_TANH_BWD, [xs, gs]) },
      {
        name: "linear + bias + gelu",
        run: () => be.free(be.matmul(a, w, geom, { expr: epi, rows: [bias] })),
      },
    ];
    let dispose = () => {};
    if (values.step) {
      const dit = await import(
        new URL("bench/cases/dit.ts", dir).href
      ) as typeof import("./cases/dit.ts");
      const s = await dit.ditStep(dit.DIT_BENCH);
      for (let i = 0; i < 2; i++) s.step().dispose(); // compile, warm the caches and pools
      const steps = Number(values.steps);
      items.push({
        name: "DiT training step",
        per: steps,
        run: () => {
          for (let i = 0; i < steps; i++) s.step().dispose();
        },
      });
      dispose = () => s.dispose();
    }
    for (const it of items) it.run(); // compile and warm up
    variants.push({ label, items, done: dispose });
  }
  const rounds = Number(values.rounds), reps = Number(values.reps);
  const key = (item: string, label: string) => `${item}\u0000${label}`;
  // The variants of an item run next to each other, and every other round backwards, so which
  // goes first flips and a slow phase of the machine hits both.
  const runs = variants[0]!.items.flatMap((_, i) =>
    variants.map((v) => ({ name: key(v.items[i]!.name, v.label), it: v.items[i]! }))
  );
  const res = await alternate(runs, { rounds, reps, alternateOrder: true }, ({ it }, n) => {
    for (let j = 0; j < n; j++) it.run();
    return n * (it.per ?? 1);
  });
  for (const it of variants[0]!.items) {
    const row: Record<string, unknown> = { item: it.name };
    for (const v of variants) {
      const s = summary(res.get(key(it.name, v.label))!, 2);
      row[v.label] = { wallMs: s.wallMs, wallMin: s.wallMinMs, cpuMs: s.cpuMs, cpuMin: s.cpuMinMs };
    }
    console.log(JSON.stringify(row));
  }
  for (const v of variants) v.done();
  console.log(JSON.stringify({ loadavg: Deno.loadavg(), rounds, reps }));
}
