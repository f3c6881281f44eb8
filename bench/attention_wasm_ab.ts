/**
 * @file A/B of the `wasm` backend's fused self-attention: the WebAssembly SIMD kernels
 * (`attn_fwd`, `attn_bwd`, split over the threads) against the CPU backend's JavaScript loops
 * that `wasm` inherited before, on the same backend instance, alternating in one process. At the
 * DiT bench's shape (qkv [64, 49, 3·128], 4 heads of 32) by default: the backend calls alone
 * (forward; forward + backward), and with `--step` also whole DiT training steps
 * (bench/cases/dit.ts's network) with each variant. Median (and min) wall and process CPU ms per
 * call over `--rounds` rounds of `--reps` calls; prints JSON lines, then the load average.
 *
 *   deno run --allow-read=. --allow-sys=loadavg,cpus bench/attention_wasm_ab.ts [--step]
 * @module
 */
import { parseArgs } from "node:util";
import { CpuBackend } from "../lib/backend/cpu.ts";
import { WasmBackend } from "../lib/backend/wasm.ts";
import { init } from "../mod.ts";
import { DIT_BENCH, ditStep } from "./cases/dit.ts";
import { floats, median } from "./cases/common.ts";
import { alternate, summary } from "./_ab.ts";

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      rounds: { type: "string", default: "7" },
      reps: { type: "string", default: "3" },
      batch: { type: "string", default: "64" },
      tokens: { type: "string", default: "49" },
      step: { type: "boolean", default: false },
    },
  });
  // The library's wasm backend (default threads: the logical CPUs, at most 8).
  const be = await init({ backend: "wasm" });
  if (!(be instanceof WasmBackend)) throw new Error(`expected the wasm backend, got ${be.name}`);
  const B = Number(values.batch), N = Number(values.tokens), H = 4, Dh = 32, D = H * Dh;
  const scale = 1 / Math.sqrt(Dh);
  const qkv = be.upload(floats(B * N * 3 * D, 1)), dO = be.upload(floats(B * N * D, 2));
  // The two variants of the same backend: its own override, or the inherited CPU loops.
  const kernels = {
    fwd: WasmBackend.prototype.attention,
    bwd: WasmBackend.prototype.attentionBackward,
  };
  const use = (variant: "wasm" | "cpu loops") => {
    const from = variant === "wasm" ? kernels : {
      fwd: CpuBackend.prototype.attention,
      bwd: CpuBackend.prototype.attentionBackward,
    };
    WasmBackend.prototype.attention = from.fwd;
    WasmBackend.prototype.attentionBackward = from.bwd;
  };
  const call = (mode: "fwd" | "fwd+bwd") => {
    const [o, lse] = be.attention(qkv, B, N, H, Dh, scale);
    if (mode === "fwd+bwd") be.free(be.attentionBackward(qkv, o, lse, dO, B, N, H, Dh, scale));
    be.free(o);
    be.free(lse);
  };
  const variants = ["cpu loops", "wasm"] as const;
  const rounds = Number(values.rounds), reps = Number(values.reps);
  let step: Awaited<ReturnType<typeof ditStep>> | undefined;
  if (values.step) step = await ditStep(DIT_BENCH);
  for (const v of variants) {
    use(v);
    call("fwd+bwd"); // warm up (V8 tiers up the loops; wasm compiles lazily)
    if (step) step.step().dispose();
  }
  const runs = variants.flatMap((v) => [
    ...(["fwd", "fwd+bwd"] as const).map((mode) => ({ name: `${v} ${mode}`, v, mode })),
    ...(step ? [{ name: `${v} DiT step`, v, mode: "step" as const }] : []),
  ]);
  // Switched only when the variant changes: a write to the prototype may drop its callers' inline
  // caches, which would then be timed in every run.
  let current: (typeof variants)[number] | undefined;
  const res = await alternate(runs, { rounds, reps }, ({ v, mode }, n) => {
    if (v !== current) use(current = v);
    if (mode !== "step") {
      for (let i = 0; i < n; i++) call(mode);
      return;
    }
    // Two steps a run, whatever `--reps`: a step costs as much as many calls.
    for (let i = 0; i < 2; i++) step!.step().dispose();
    return 2;
  });
  use("wasm");
  step?.dispose();
  for (const [k, e] of res) {
    const s = summary(e, 2);
    console.log(JSON.stringify({
      variant: k,
      wallMs: s.wallMs,
      wallMsMin: s.wallMinMs,
      cpuMs: s.cpuMs,
    }));
  }
  for (const mode of ["fwd", "fwd+bwd", "DiT step"]) {
    const a = res.get(`cpu loops ${mode}`), b = res.get(`wasm ${mode}`);
    if (a && b) {
      console.log(JSON.stringify({
        speedup: mode,
        wall: +(median(a.wall) / median(b.wall)).toFixed(2),
      }));
    }
  }
  console.log(
    JSON.stringify({
      shape: [B, N, 3 * D],
      heads: H,
      load: Deno.loadavg?.(),
      backend: be.description,
    }),
  );
}
