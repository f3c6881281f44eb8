/**
 * @file A/B of the `wasm` backend's fused LayerNorm + AdaLN modulation calls
 * (`layerNormModulate`, `layerNormModulateBackward`: kernels/wasm_gemm.ts `ln_mod_fwd`,
 * `ln_mod_bwd`) between this checkout and another commit, alternating in one process: `--base
 * DIR` is a plain copy of the other commit's tree (e.g. `git archive <rev> | tar -x -C DIR`),
 * whose `mod.ts` is imported as a second module graph with a wasm backend of its own, as in
 * bench/attention_kernel_ab.ts. At the DiT bench's shape by default (x [64, 49, 128]). Median
 * (and min) wall and process CPU ms per call over `--rounds` rounds of `--reps` calls, the
 * largest difference between the two variants' outputs (y, stats, dx, dshift, dscale: 0 when the
 * kernels keep the same order of f32 operations), then the load average.
 *
 *   git archive HEAD | tar -x -C /tmp/base
 *   deno run --allow-read --allow-sys=loadavg,cpus bench/lnmod_kernel_ab.ts --base /tmp/base
 * @module
 */
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import { floats } from "./cases/common.ts";
import { alternate, summary } from "./_ab.ts";

// The two Backend methods used here (the two graphs' classes are distinct).
interface Be {
  upload(x: Float32Array): unknown;
  readSync(s: unknown): Float32Array;
  free(s: unknown): void;
  layerNormModulate(
    x: unknown,
    sh: unknown,
    sc: unknown,
    b: number,
    t: number,
    d: number,
    eps: number,
  ): unknown[];
  layerNormModulateBackward(
    x: unknown,
    sc: unknown,
    st: unknown,
    dy: unknown,
    b: number,
    t: number,
    d: number,
  ): unknown[];
  close?(): void;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      base: { type: "string" },
      rounds: { type: "string", default: "15" },
      reps: { type: "string", default: "20" },
      batch: { type: "string", default: "64" },
      tokens: { type: "string", default: "49" },
      width: { type: "string", default: "128" },
    },
  });
  if (!values.base) throw new RangeError("--base: expected the directory of the other commit");
  const B = Number(values.batch), T = Number(values.tokens), D = Number(values.width);
  const x = floats(B * T * D, 1), sh = floats(B * D, 2), sc = floats(B * D, 3);
  const dy = floats(B * T * D, 4);
  const load = async (name: string, root: URL) => {
    const lib = await import(new URL("mod.ts", root).href);
    const be = (await lib.init({ backend: "wasm" })) as Be;
    const [X, SH, SC, DY] = [x, sh, sc, dy].map((a) => be.upload(a));
    // Each call's outputs, read back when `read` (else freed only).
    const done = (out: unknown[], read: boolean) => {
      const r = read ? out.map((s) => be.readSync(s)) : [];
      for (const s of out) be.free(s);
      return r;
    };
    // The backward takes this graph's forward stats (the two graphs' agree bit for bit).
    const [y0, st] = be.layerNormModulate(X, SH, SC, B, T, D, 1e-6);
    be.free(y0);
    const fwd = (read = false) => done(be.layerNormModulate(X, SH, SC, B, T, D, 1e-6), read);
    const bwd = (read = false) => done(be.layerNormModulateBackward(X, SC, st, DY, B, T, D), read);
    return { name, be, fwd, bwd };
  };
  const here = new URL("../", import.meta.url);
  const base = pathToFileURL(Deno.realPathSync(values.base) + "/");
  const graphs = [await load("base", base), await load("this", here)];
  // Warm up (V8 tiers up) and compare the outputs.
  const outs = graphs.map((v) => (v.fwd(), v.bwd(), [...v.fwd(true), ...v.bwd(true)]));
  const diff = ["y", "stats", "dx", "dshift", "dscale"].map((what, k) => {
    const a = outs[0]![k]!, b = outs[1]![k]!;
    let d = 0, big = 0;
    for (let i = 0; i < a.length; i++) {
      d = Math.max(d, Math.abs(a[i]! - b[i]!));
      big = Math.max(big, Math.abs(a[i]!));
    }
    return { what, maxAbsDiff: d, maxAbs: big };
  });
  const runs = graphs.flatMap((v) =>
    [false, true].map((bwd) => ({ name: `${v.name} ${bwd ? "bwd" : "fwd"}`, v, bwd }))
  );
  const rounds = Number(values.rounds), reps = Number(values.reps);
  const res = await alternate(runs, { rounds, reps, alternateOrder: true }, ({ v, bwd }, n) => {
    for (let i = 0; i < n; i++) bwd ? v.bwd() : v.fwd();
  });
  for (const [k, e] of res) {
    const s = summary(e, 3);
    console.log(JSON.stringify({
      variant: k,
      wallMs: s.wallMs,
      wallMsMin: s.wallMinMs,
      cpuMs: s.cpuMs,
    }));
  }
  console.log(JSON.stringify({ diff }));
  console.log(JSON.stringify({ shape: [B, T, D], rounds, reps, load: Deno.loadavg() }));
  for (const v of graphs) v.be.close?.();
}
