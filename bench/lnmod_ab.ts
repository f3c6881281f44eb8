/**
 * @file A/B of the fused LayerNorm + AdaLN modulation (`layerNormModulate`) against the
 * composite it replaced (`_fusedLayerNormModulate.enabled = false`: LayerNorm from primitives,
 * then the broadcast multiply and add), alternating in one process on the current backend
 * (`FLOWGPU_BACKEND`): whole DiT training steps of bench/cases/dit.ts's network (hidden 128,
 * depth 4, batch 64; nine LayerNorm + modulate calls a step). Median (and min) wall and process
 * CPU ms per step over `--rounds` rounds of `--reps` steps per variant; prints JSON lines, then
 * the load average.
 *
 *   deno run --allow-read=. --allow-env=FLOWGPU_BACKEND --allow-sys=loadavg bench/lnmod_ab.ts
 * @module
 */
import { parseArgs } from "node:util";
import { getBackend, init } from "../mod.ts";
import { _fusedLayerNormModulate } from "../lib/ops/layernorm.ts";
import { DIT_BENCH, ditStep } from "./cases/dit.ts";
import { alternate, summary } from "./_ab.ts";

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      rounds: { type: "string", default: "3" },
      reps: { type: "string", default: "2" },
    },
  });
  const rounds = Number(values.rounds), reps = Number(values.reps);
  await init();
  const be = getBackend();
  const { step, dispose } = await ditStep(DIT_BENCH);
  const variants = [{ name: "fused", fused: true }, { name: "composite", fused: false }];
  const run = async ({ fused }: { fused: boolean }, n: number) => {
    _fusedLayerNormModulate.enabled = fused;
    try {
      for (let i = 0; i < n; i++) step().dispose();
      await be.sync();
    } finally {
      _fusedLayerNormModulate.enabled = true;
    }
  };
  for (const v of variants) await run(v, 1); // warm-up (compiles, fills pools)
  const res = await alternate(variants, { rounds, reps }, run);
  for (const [name, e] of res) {
    const s = summary(e);
    console.log(JSON.stringify({
      backend: be.name,
      variant: name,
      stepWallMs: s.wallMs,
      stepWallMinMs: s.wallMinMs,
      stepCpuMs: s.cpuMs,
    }));
  }
  console.log(JSON.stringify({ load: Deno.loadavg()[0] }));
  dispose();
  (be as { close?: () => void }).close?.();
}
