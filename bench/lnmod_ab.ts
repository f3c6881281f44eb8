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
import process from "node:process";
import { parseArgs } from "node:util";
import { getBackend, init } from "../mod.ts";
import { _fusedLayerNormModulate } from "../lib/ops/layernorm.ts";
import { DIT_BENCH, ditStep } from "./cases/dit.ts";

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b), h = s.length >> 1;
  return s.length % 2 ? s[h]! : (s[h - 1]! + s[h]!) / 2;
}

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
  const variants = [["fused", true], ["composite", false]] as const;
  const run = async (fused: boolean, n: number) => {
    _fusedLayerNormModulate.enabled = fused;
    try {
      for (let i = 0; i < n; i++) step().dispose();
      await be.sync();
    } finally {
      _fusedLayerNormModulate.enabled = true;
    }
  };
  for (const [, fused] of variants) await run(fused, 1); // warm-up (compiles, fills pools)
  const res = new Map<string, { wall: number[]; cpu: number[] }>();
  for (let r = 0; r < rounds; r++) {
    for (const [name, fused] of variants) {
      const t0 = performance.now(), c0 = process.cpuUsage();
      await run(fused, reps);
      const cu = process.cpuUsage(c0);
      const e = res.get(name) ?? { wall: [], cpu: [] };
      e.wall.push((performance.now() - t0) / reps);
      e.cpu.push((cu.user + cu.system) / 1000 / reps);
      res.set(name, e);
    }
  }
  for (const [name, e] of res) {
    console.log(JSON.stringify({
      backend: be.name,
      variant: name,
      stepWallMs: +median(e.wall).toFixed(1),
      stepWallMinMs: +Math.min(...e.wall).toFixed(1),
      stepCpuMs: +median(e.cpu).toFixed(1),
    }));
  }
  console.log(JSON.stringify({ load: Deno.loadavg()[0] }));
  dispose();
  (be as { close?: () => void }).close?.();
}
