/**
 * @file A/B of the DiT MLP's first layer and its backward on the `wasm` backend, per call,
 * alternating in one process between another commit (`--base DIR`, a plain copy of its tree,
 * imported as a second module graph with a wasm backend of its own, as in
 * bench/lnmod_kernel_ab.ts) and this checkout: the product alone (x·w1ᵀ + b1, the kernel's plain
 * stores), the product then the GELU-tanh pass (`unfused fwd`: what a step ran before the
 * feedForward op), and dy·w2 then the g·geluTanh′(z) pass (`unfused bwd`), on both graphs; and on
 * this one `Backend.matmulOutputs` with the same results computed in the SGEMM's stores (`fused
 * fwd`: GELU-tanh and its derivative; `fused bwd`: dy·w2 times the saved derivative; on the base
 * graph too when it has the method). Default
 * shape: the DiT bench's fc1, x [3136, 128], w1 [512, 128]. Median (and min) wall and process CPU
 * ms per call over `--rounds` rounds of `--reps` calls, the largest difference between the fused
 * and unfused results (0: the same f32 steps), then the load average.
 *
 *   git archive HEAD | tar -x -C /tmp/base
 *   deno run --allow-read --allow-sys=loadavg,cpus bench/gelu_mlp_ab.ts --base /tmp/base
 * @module
 */
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import { floats } from "./cases/common.ts";
import { alternate, summary } from "./_ab.ts";
import type { Expr, MatmulGeom } from "../lib/ir.ts";

// The Backend methods used here (the two graphs' classes are distinct).
interface Be {
  upload(x: Float32Array): unknown;
  readSync(s: unknown): Float32Array;
  free(s: unknown): void;
  matmul(a: unknown, b: unknown, g: MatmulGeom, e?: { expr: Expr; rows: unknown[] }): unknown;
  elementwise(o: Expr[], ins: unknown[], strides: number[][], shape: number[]): unknown[];
  matmulOutputs?(
    a: unknown,
    b: unknown,
    g: MatmulGeom,
    o: { exprs: Expr[]; rows: unknown[]; dense: unknown[] },
  ): unknown[];
  close?(): void;
}

const I = (index: number): Expr => ({ kind: "input", index });
const un = (op: "geluTanh" | "geluTanhGrad", x: Expr): Expr => ({
  kind: "unary",
  op,
  x,
  p0: 0,
  p1: 0,
});
const bin = (op: "add" | "mul", a: Expr, b: Expr): Expr => ({ kind: "binary", op, a, b });

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      base: { type: "string" },
      rounds: { type: "string", default: "11" },
      reps: { type: "string", default: "10" },
      rows: { type: "string", default: "3136" },
      hidden: { type: "string", default: "512" },
      width: { type: "string", default: "128" },
    },
  });
  if (!values.base) throw new RangeError("--base: expected the directory of the other commit");
  const M = Number(values.rows), H = Number(values.hidden), D = Number(values.width);
  const x = floats(M * D, 1), w1 = floats(H * D, 2).map((v) => v * 0.2), b1 = floats(H, 3);
  const dy = floats(M * D, 4), w2 = floats(D * H, 5);
  const geom = (n: number, k: number, transB: boolean): MatmulGeom => ({
    batch: 1,
    m: M,
    n,
    k,
    transA: false,
    transB,
    aBatchStride: 0,
    bBatchStride: 0,
  });
  const fwdG = geom(H, D, true), bwdG = geom(H, D, false);
  const z = bin("add", I(0), I(1));
  const load = async (name: string, root: URL) => {
    const lib = await import(new URL("mod.ts", root).href);
    const be = (await lib.init({ backend: "wasm" })) as Be;
    const [X, W1, B1, DY, W2] = [x, w1, b1, dy, w2].map((a) => be.upload(a));
    const Z = be.matmul(X, W1, fwdG, { expr: z, rows: [B1] });
    const done = (out: unknown[], read: boolean) => {
      const r = read ? out.map((s) => be.readSync(s)) : [];
      for (const s of out) be.free(s);
      return r;
    };
    const ops: Record<string, (read?: boolean) => Float32Array[]> = {
      product: (read = false) => done([be.matmul(X, W1, fwdG, { expr: z, rows: [B1] })], read),
      "unfused fwd": (read = false) => {
        const p = be.matmul(X, W1, fwdG, { expr: z, rows: [B1] });
        const [a] = be.elementwise([un("geluTanh", I(0))], [p], [[H, 1]], [M, H]);
        be.free(p);
        return done([a], read);
      },
      "unfused bwd": (read = false) => {
        const g = be.matmul(DY, W2, bwdG);
        const [dz] = be.elementwise(
          [bin("mul", I(0), un("geluTanhGrad", I(1)))],
          [g, Z],
          [[H, 1], [H, 1]],
          [M, H],
        );
        be.free(g);
        return done([dz], read);
      },
    };
    if (be.matmulOutputs) {
      const [, dAct] = be.matmulOutputs!(X, W1, fwdG, {
        exprs: [un("geluTanh", z), un("geluTanhGrad", z)],
        rows: [B1],
        dense: [],
      });
      ops["fused fwd"] = (read = false) =>
        done(
          be.matmulOutputs!(X, W1, fwdG, {
            exprs: [un("geluTanh", z), un("geluTanhGrad", z)],
            rows: [B1],
            dense: [],
          }).slice(0, read ? 1 : 2),
          read,
        );
      ops["fused bwd"] = (read = false) =>
        done(
          be.matmulOutputs!(DY, W2, bwdG, {
            exprs: [bin("mul", I(0), I(1))],
            rows: [],
            dense: [dAct],
          }),
          read,
        );
    }
    return { name, be, ops };
  };
  const here = new URL("../", import.meta.url);
  const base = pathToFileURL(Deno.realPathSync(values.base) + "/");
  const graphs = [await load("base", base), await load("this", here)];
  const t = graphs[1]!.ops;
  const diff = (a: Float32Array, b: Float32Array) => {
    let d = 0;
    for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
    return d;
  };
  const diffs = {
    fwd: diff(t["fused fwd"]!(true)[0]!, t["unfused fwd"]!(true)[0]!),
    bwd: diff(t["fused bwd"]!(true)[0]!, t["unfused bwd"]!(true)[0]!),
  };
  const runs = graphs.flatMap((v) =>
    Object.entries(v.ops).map(([op, f]) => ({ name: `${v.name} ${op}`, f }))
  );
  for (const r of runs) r.f(), r.f(); // warm up (V8 tiers up)
  const rounds = Number(values.rounds), reps = Number(values.reps);
  const res = await alternate(runs, { rounds, reps, alternateOrder: true }, ({ f }, n) => {
    for (let i = 0; i < n; i++) f();
  });
  for (const [k, e] of res) {
    const s = summary(e, 3);
    console.log(
      JSON.stringify({ variant: k, wallMs: s.wallMs, wallMsMin: s.wallMinMs, cpuMs: s.cpuMs }),
    );
  }
  console.log(JSON.stringify({ maxAbsDiffFusedVsUnfused: diffs }));
  console.log(JSON.stringify({ shape: [M, D, H], rounds, reps, load: Deno.loadavg() }));
  for (const v of graphs) v.be.close?.();
}
