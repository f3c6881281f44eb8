/**
 * @file The gated residual (`gatedResidual`, x + g·a with g [B, D] broadcast over the tokens)
 * on the `wasm` backend, alternating in one process: the backward as the unfused ops ran it (one
 * elementwise call writing g·dy and a·dy, then the token sum of a·dy) against the fused
 * `gatedResidualBackward` on one thread and split across two; the forward as a multiply then an
 * add against the one fused expression; the LayerNorm + modulate backward then the residual
 * gradient's add against the backward adding it as it stores dx (`acc`). At the DiT bench's shape
 * by default ([64, 49, 128]).
 * Median (and min) wall and process CPU ms per call over `--rounds` rounds of `--reps` calls,
 * the largest difference of the fused results from the unfused (da, the forward and dx + acc: 0;
 * dg: f32 against f64 summation), then the load average.
 *
 *   deno run --allow-read --allow-sys=loadavg,cpus bench/gated_ab.ts
 * @module
 */
import { parseArgs } from "node:util";
import { createWasmBackend, type WasmBackend } from "../lib/backend/wasm.ts";
import type { Storage } from "../lib/backend/backend.ts";
import type { Expr } from "../lib/ir.ts";
import { floats } from "./cases/common.ts";
import { alternate, summary } from "./_ab.ts";

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      rounds: { type: "string", default: "15" },
      reps: { type: "string", default: "20" },
      batch: { type: "string", default: "64" },
      tokens: { type: "string", default: "49" },
      width: { type: "string", default: "128" },
    },
  });
  const B = Number(values.batch), T = Number(values.tokens), D = Number(values.width);
  const n = B * T * D, shape = [B, T, D], dense = [T * D, D, 1], gate = [D, 0, 1];
  const one = await createWasmBackend({ threads: 1 });
  const two = await createWasmBackend({ threads: 2, elementwiseSplitWork: 0 });
  const [i0, i1, i2]: Expr[] = [0, 1, 2].map((index) => ({ kind: "input", index }));
  const mul = (a: Expr, b: Expr): Expr => ({ kind: "binary", op: "mul", a, b });
  const add = (a: Expr, b: Expr): Expr => ({ kind: "binary", op: "add", a, b });
  const host = [floats(B * D, 1), floats(n, 2), floats(n, 3), floats(n, 4)];
  const on = (be: WasmBackend) => host.map((h) => be.upload(h));
  const [g1, a1, y1, x1] = on(one) as Storage[];
  const [g2, a2, y2, x2] = on(two) as Storage[];
  const unfusedBwd = (be: WasmBackend, g: Storage, a: Storage, dy: Storage) => {
    const [da, ady] = be.elementwise([mul(i0!, i2!), mul(i1!, i2!)], [g, a, dy], [
      gate,
      dense,
      dense,
    ], shape);
    const dg = be.reduce("sum", ady!, shape, [1]);
    be.free(ady!);
    return [da!, dg];
  };
  const unfusedFwd = (be: WasmBackend, x: Storage, g: Storage, a: Storage) => {
    const [ga] = be.elementwise([mul(i0!, i1!)], [g, a], [gate, dense], shape);
    const [y] = be.elementwise([add(i0!, i1!)], [x, ga!], [dense, dense], shape);
    be.free(ga!);
    return [y!];
  };
  const fusedFwd = (be: WasmBackend, x: Storage, g: Storage, a: Storage) =>
    be.elementwise([add(i0!, mul(i1!, i2!))], [x, g, a], [dense, gate, dense], shape);
  const [lnY, lnSt] = two.layerNormModulate(x2!, g2!, g2!, B, T, D, 1e-6);
  two.free(lnY);
  const lnAdd = (be: WasmBackend, acc: boolean) => {
    const [dx, dsh, dsc] = be.layerNormModulateBackward(
      x2!,
      g2!,
      lnSt,
      y2!,
      B,
      T,
      D,
      acc ? a2 : undefined,
    );
    if (acc) return [dx, dsh, dsc];
    const [s] = be.elementwise([add(i0!, i1!)], [a2!, dx], [dense, dense], shape);
    be.free(dx);
    return [s!, dsh, dsc];
  };
  const variants = [
    { name: "bwd unfused", f: () => unfusedBwd(one, g1, a1, y1), be: one },
    {
      name: "bwd fused 1 thread",
      f: () => one.gatedResidualBackward(g1, a1, y1, B, T, D),
      be: one,
    },
    {
      name: "bwd fused 2 threads",
      f: () => two.gatedResidualBackward(g2, a2, y2, B, T, D),
      be: two,
    },
    { name: "fwd unfused", f: () => unfusedFwd(one, x1, g1, a1), be: one },
    { name: "fwd fused", f: () => fusedFwd(one, x1, g1, a1), be: one },
    // The residual stream's gradient: the LayerNorm backward's dx, then the tape's add, against
    // dx + acc added in the backward's store (both split over two threads, as in a DiT step).
    { name: "ln bwd + add", f: () => lnAdd(two, false), be: two },
    { name: "ln bwd (acc)", f: () => lnAdd(two, true), be: two },
  ];
  // Warm-up, and the results' differences.
  const res = variants.map((v) => v.f().map((s) => Float32Array.from(v.be.readSync(s))));
  const diff = (p: Float32Array, q: Float32Array) => {
    let m = 0;
    for (let i = 0; i < p.length; i++) m = Math.max(m, Math.abs(p[i]! - q[i]!));
    return m;
  };
  const timings = await alternate(variants, {
    rounds: Number(values.rounds),
    reps: Number(values.reps),
    alternateOrder: true,
  }, (v, reps) => {
    for (let r = 0; r < reps; r++) for (const s of v.f()) v.be.free(s);
  });
  for (const [name, t] of timings) console.log(JSON.stringify({ variant: name, ...summary(t, 3) }));
  console.log(JSON.stringify({
    shape,
    maxDiffDa: Math.max(diff(res[1]![0]!, res[0]![0]!), diff(res[2]![0]!, res[0]![0]!)),
    maxDiffDg: Math.max(diff(res[1]![1]!, res[0]![1]!), diff(res[2]![1]!, res[0]![1]!)),
    dgThreadsBitsEqual: res[1]![1]!.every((v, i) => Object.is(v, res[2]![1]![i])),
    maxDiffForward: diff(res[4]![0]!, res[3]![0]!),
    maxDiffLnAcc: diff(res[6]![0]!, res[5]![0]!),
    load: Deno.loadavg(),
  }));
  one.close();
  two.close();
}
