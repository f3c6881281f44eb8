/**
 * @file A/B of the `wasm` backend's fused self-attention calls (`attention`, and `attention` then
 * `attentionBackward`) between this checkout and another commit, alternating in one process:
 * `--base DIR` is a plain copy of the other commit's tree (e.g. `git archive <rev> | tar -x -C
 * DIR`), whose `mod.ts` is imported as a second module graph with a wasm backend of its own (its
 * own workers; each waits in `Atomics.wait` while the other runs), as in bench/dit_ab.ts. At the
 * DiT bench's shape by default (qkv [64, 49, 3·128], 4 heads of 32). Median (and min) wall and
 * process CPU ms per call over `--rounds` rounds of `--reps` calls, the largest difference
 * between the two variants' outputs (o, lse, dqkv: they should differ only by rounding), then
 * the load average.
 *
 *   git archive 530b554 | tar -x -C /tmp/base
 *   deno run --allow-read --allow-sys=loadavg,cpus bench/attention_kernel_ab.ts --base /tmp/base
 * @module
 */
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import { floats } from "./cases/common.ts";
import { alternate, summary } from "./_ab.ts";

// The few Backend methods used here (the two graphs' classes are distinct).
interface Be {
  upload(x: Float32Array): unknown;
  readSync(s: unknown): Float32Array;
  free(s: unknown): void;
  attention(qkv: unknown, b: number, n: number, h: number, d: number, sc: number): unknown[];
  attentionBackward(
    qkv: unknown,
    o: unknown,
    lse: unknown,
    dO: unknown,
    b: number,
    n: number,
    h: number,
    d: number,
    sc: number,
  ): unknown;
  close?(): void;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      base: { type: "string" },
      rounds: { type: "string", default: "9" },
      reps: { type: "string", default: "5" },
      batch: { type: "string", default: "64" },
      tokens: { type: "string", default: "49" },
      heads: { type: "string", default: "4" },
      width: { type: "string", default: "32" },
    },
  });
  if (!values.base) throw new RangeError("--base: expected the directory of the other commit");
  const B = Number(values.batch), N = Number(values.tokens);
  const H = Number(values.heads), Dh = Number(values.width), D = H * Dh;
  const scale = 1 / Math.sqrt(Dh);
  const x = floats(B * N * 3 * D, 1), g = floats(B * N * D, 2);
  const load = async (name: string, root: URL) => {
    const lib = await import(new URL("mod.ts", root).href);
    const be = (await lib.init({ backend: "wasm" })) as Be;
    const qkv = be.upload(x), dO = be.upload(g);
    const call = (bwd: boolean) => {
      const [o, lse] = be.attention(qkv, B, N, H, Dh, scale);
      let dq: unknown;
      if (bwd) dq = be.attentionBackward(qkv, o, lse, dO, B, N, H, Dh, scale);
      const out = [o, lse, dq].filter((s) => s !== undefined).map((s) => be.readSync(s));
      for (const s of [o, lse, dq]) if (s !== undefined) be.free(s);
      return out;
    };
    return { name, be, call };
  };
  const here = new URL("../", import.meta.url);
  const base = pathToFileURL(Deno.realPathSync(values.base) + "/");
  const graphs = [await load("base", base), await load("this", here)];
  // Warm up (wasm compiles lazily, V8 tiers up) and compare the outputs.
  const outs = graphs.map((v) => (v.call(true), v.call(true)));
  const diff = ["o", "lse", "dqkv"].map((what, k) => {
    const a = outs[0]![k]!, b = outs[1]![k]!;
    let d = 0, big = 0;
    for (let i = 0; i < a.length; i++) {
      d = Math.max(d, Math.abs(a[i]! - b[i]!));
      big = Math.max(big, Math.abs(a[i]!));
    }
    return { what, maxAbsDiff: d, maxAbs: big };
  });
  const runs = graphs.flatMap((v) =>
    [false, true].map((bwd) => ({ name: `${v.name} ${bwd ? "fwd+bwd" : "fwd"}`, v, bwd }))
  );
  const rounds = Number(values.rounds), reps = Number(values.reps);
  const res = await alternate(runs, { rounds, reps, alternateOrder: true }, ({ v, bwd }, n) => {
    for (let i = 0; i < n; i++) v.call(bwd);
  });
  for (const [k, e] of res) {
    const s = summary(e, 2);
    console.log(JSON.stringify({
      variant: k,
      wallMs: s.wallMs,
      wallMsMin: s.wallMinMs,
      cpuMs: s.cpuMs,
    }));
  }
  console.log(JSON.stringify({ diff }));
  console.log(
    JSON.stringify({ shape: [B, N, 3 * D], heads: H, rounds, reps, load: Deno.loadavg() }),
  );
  for (const v of graphs) v.be.close?.();
}
