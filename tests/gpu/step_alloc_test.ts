/**
 * @file Issue 18: after warm-up, a training step through `fit` allocates nothing new on the
 * WebGPU backend — no pool misses, no fresh upload buffers, no growth of live or pooled bytes.
 */
import { strict as assert } from "node:assert";
import {
  backendByName,
  cfmData,
  cfmTrainer,
  createRun,
  fit,
  Generator,
  getBackend,
  setBackend,
} from "../../mod.ts";
import { HAS_WEBGPU } from "../_helpers.ts";
import type { WebGPUBackend, WebGPUStats } from "../../lib/backend/webgpu.ts";

for (const trace of [false, true]) {
  Deno.test({
    name: `a CFM training step (AdamW, EMA, logging${
      trace ? ", traced" : ", eager"
    }) allocates nothing new after warm-up`,
    ignore: !HAS_WEBGPU,
    fn: async () => {
      const prev = getBackend().name;
      setBackend("webgpu");
      const be = backendByName("webgpu") as WebGPUBackend;
      const dir = await Deno.makeTempDir({ prefix: "step-alloc-" });
      const cfg = {
        model: "velocity-mlp" as const,
        hidden: 32,
        depth: 2,
        dataShape: [2],
        numClasses: 0,
        cfgDropout: 0,
        seed: 0,
        ot: "exact" as const, // the coupling is solved on the host: one more upload per step
        otReg: 0.05,
        otIters: 20,
        sigmaMin: 0,
        variant: "icfm" as const,
        timeSampling: "uniform" as const,
        timeMean: 0,
        timeStd: 1,
        batchSize: 64,
        lr: 1e-3,
        emaDecay: 0.99,
      };
      const gen = new Generator(0);
      const trainer = cfmTrainer(cfg, await cfmData("moons", 0), gen);
      // The counters at the start of every step (the previous step's work all recorded);
      // prepare runs eagerly on every step, replayed or not.
      const at: WebGPUStats[] = [];
      const prepare = trainer.prepare?.bind(trainer);
      trainer.prepare = (ctx) => {
        at.push(be.stats());
        return prepare?.(ctx);
      };
      try {
        const run = await createRun("train:cfm", { outputDir: dir, config: cfg });
        await fit(trainer, {
          run,
          generator: gen,
          maxSteps: 45,
          logEvery: 10,
          progress: false,
          trace,
        });
        assert.equal(at.length, 45);
        const s = (step: number) => at[step - 1]!;
        // Steps 25 and 45 sit at the same place between two log reads (steps 20, 30, 40).
        for (const k of ["buffersCreated", "uploadsCreated", "pooledBytes"] as const) {
          assert.equal(s(45)[k], s(25)[k], `${k} grew from step 25 to 45`);
        }
        for (let k = 25; k <= 35; k++) {
          assert.equal(s(k + 10).liveBytes, s(k).liveBytes, `live bytes at step ${k} vs ${k + 10}`);
        }
        // Each step did upload (so reuse, not the absence of uploads, kept the count flat).
        assert.ok(
          s(45).uploads - s(25).uploads >= 20,
          `uploads: ${s(25).uploads} → ${s(45).uploads}`,
        );
      } finally {
        trainer.model.dispose();
        trainer.optimizer.dispose();
        trainer.ema!.dispose();
        setBackend(prev);
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}
