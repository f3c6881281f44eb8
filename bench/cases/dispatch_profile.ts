/**
 * @file Per-kernel profile of one training step on the WebGPU backend: records every dispatch
 * of one `train:flowmap` step (bench/flowmap_step.ts), then replays each recorded dispatch
 * `reps` times in a batch of its own and times it (wall and process CPU time: lavapipe runs
 * its worker threads inside this process, so CPU time is less disturbed by other jobs on a
 * shared machine than wall time). Prints one JSON line per kernel family (dispatch count and
 * ms per step), sorted by cost. Replays overwrite scratch buffers, so run it on its own.
 * `dit` profiles the bench's DiT step instead (bench/cases/dit.ts, batch 64, hidden 128, depth 4).
 *
 *   deno run --allow-read=. --allow-env=FLOWGPU_BACKEND bench/cases/dispatch_profile.ts lsd
 *   deno run --allow-read=.,/usr/share/datasets --allow-env=FLOWGPU_BACKEND \
 *     bench/cases/dispatch_profile.ts dit 3
 * @module
 */
import process from "node:process";
import { getBackend, init } from "../../mod.ts";
import type { GpuRuntime, Kernel } from "../../lib/device/runtime.ts";
import { flowMapStep } from "../flowmap_step.ts";
import { DIT_BENCH, ditStep } from "./dit.ts";

interface Rec {
  k: Kernel;
  buffers: (GPUBuffer | GPUBufferBinding)[];
  params: number[] | null;
  grid: [number, number, number];
}

if (import.meta.main) {
  await init();
  const be = getBackend() as unknown as { runtime?: GpuRuntime };
  const rt = be.runtime;
  if (!rt) throw new Error("dispatch_profile needs the WebGPU backend (FLOWGPU_BACKEND=webgpu)");
  const method = (Deno.args[0] ?? "lsd") as "lsd" | "psd" | "esd" | "diagonal" | "dit";
  const reps = Number(Deno.args[1] ?? 10);
  const { step, dispose } = method === "dit" ? await ditStep(DIT_BENCH) : flowMapStep(method);
  for (let i = 0; i < 3; i++) await step().item();
  const recs: Rec[] = [];
  const orig = rt.dispatch.bind(rt);
  rt.dispatch = (k, buffers, params, grid) => {
    recs.push({ k, buffers: [...buffers], params: params ? [...params] : null, grid: [...grid] });
    orig(k, buffers, params, grid);
  };
  // Hold the buffers the recorded step frees until the replays are done: returned to the pool,
  // they could be destroyed (a step larger than the pool's cap) or reused by a later buffer.
  const held: GPUBuffer[] = [];
  const release = rt.release.bind(rt);
  rt.release = (b) => void held.push(b);
  await step().item();
  rt.dispatch = orig;
  rt.release = release;
  // Baseline: an empty sync.
  const empty: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    await rt.sync();
    empty.push(performance.now() - t0);
  }
  empty.sort((a, b) => a - b);
  const base = empty[2]!;
  const fam = new Map<string, { n: number; wall: number; cpu: number; grids: Set<string> }>();
  let totWall = 0, totCpu = 0;
  for (const r of recs) {
    const t0 = performance.now(), c0 = process.cpuUsage();
    for (let i = 0; i < reps; i++) orig(r.k, r.buffers, r.params, r.grid);
    await rt.sync();
    const c = process.cpuUsage(c0);
    const wall = Math.max(0, performance.now() - t0 - base) / reps;
    const cpu = (c.user + c.system) / 1000 / reps;
    totWall += wall;
    totCpu += cpu;
    // Family: the kernel key without its expression body.
    const key = r.k.key.length > 60 ? r.k.key.slice(0, 60) + "…" : r.k.key;
    const f = fam.get(key) ?? { n: 0, wall: 0, cpu: 0, grids: new Set() };
    f.n++;
    f.wall += wall;
    f.cpu += cpu;
    f.grids.add(r.grid.join("x"));
    fam.set(key, f);
  }
  const rows = [...fam.entries()].sort((a, b) => b[1].wall - a[1].wall);
  for (const [key, f] of rows) {
    console.log(JSON.stringify({
      kernel: key,
      dispatches: f.n,
      wallMs: +f.wall.toFixed(2),
      cpuMs: +f.cpu.toFixed(2),
      grids: [...f.grids].slice(0, 4),
    }));
  }
  console.log(JSON.stringify({
    method,
    dispatches: recs.length,
    wallMsSum: +totWall.toFixed(1),
    cpuMsSum: +totCpu.toFixed(1),
    load: Deno.loadavg?.()[0],
  }));
  for (const b of held) release(b);
  dispose();
}
