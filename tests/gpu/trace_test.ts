/**
 * @file The traced training step (lib/device/trace.ts, lib/train/trace.ts): a replayed `fit`
 * run (toy CFM, AdamW, EMA with warm-up, cosine lr schedule) logs the same loss trajectory
 * and ends with the same parameters, optimizer state and EMA as an eager run on the same
 * backend, and as the CPU backend; a shape change falls back to eager execution; a step whose
 * parameter words change in a way the trace cannot recompute is never replayed; a freed
 * buffer drops the trace; and no buffer the trace pins is ever handed out by the pool
 * (checked by poisoning every buffer the pool hands out afterwards with NaN).
 * @module
 */
import { strict as assert } from "node:assert";
import {
  backendByName,
  cfmData,
  cfmTrainer,
  createRun,
  fit,
  fusedGroups,
  fx,
  Generator,
  getBackend,
  optim,
  setBackend,
  StepTracer,
  type Tensor,
  tensor,
} from "../../mod.ts";
import type { WebGPUBackend } from "../../lib/backend/webgpu.ts";
import { runTask } from "../../cli/mod.ts";
import "../_helpers.ts"; // initialises the backends

const GPU = backendByName("webgpu") as WebGPUBackend | undefined;

async function on<T>(name: "cpu" | "webgpu", f: () => Promise<T>): Promise<T> {
  const prev = getBackend().name as "cpu" | "webgpu";
  setBackend(name);
  try {
    return await f();
  } finally {
    setBackend(prev);
  }
}

interface RunOut {
  metrics: Record<string, unknown>[];
  params: Float32Array[];
  ema: Float32Array[];
  slots: Float32Array[];
  modes: Record<string, number>;
  stepCount: number;
  genCounter: number;
}

async function cfmRun(trace: boolean, steps = 24): Promise<RunOut> {
  const dir = await Deno.makeTempDir();
  try {
    const cfg = {
      model: "velocity-mlp" as const,
      hidden: 32,
      depth: 2,
      dataShape: [2],
      numClasses: 0,
      cfgDropout: 0,
      seed: 3,
      ot: "none" as const,
      otReg: 0.05,
      otIters: 10,
      sigmaMin: 0,
      variant: "icfm" as const,
      timeSampling: "uniform" as const,
      timeMean: 0,
      timeStd: 1,
      batchSize: 64,
      lr: 3e-3,
      emaDecay: 0.99,
    };
    const gen = new Generator(5);
    const trainer = cfmTrainer(cfg, await cfmData("8gaussians", 0), gen);
    trainer.optimizer.dispose();
    trainer.optimizer = new optim.AdamW({ lr: 3e-3, weightDecay: 0.05 });
    const run = await createRun("trace-test", { outputDir: dir, config: cfg });
    const r = await fit(trainer, {
      run,
      generator: gen,
      maxSteps: steps,
      logEvery: 4,
      checkpointEvery: 1000,
      progress: false,
      lrSchedule: optim.cosine(steps, { warmup: 5 }),
      trace,
      log: () => {},
    });
    const read = (ts: Tensor[]) => Promise.all(ts.map((t) => t.data()));
    const sd = trainer.optimizer.stateDict();
    const out: RunOut = {
      metrics: await run.readMetrics(),
      params: await read(trainer.model.parameters()),
      ema: await read(trainer.ema!.shadow),
      slots: await read(Object.values(sd.tensors)),
      modes: r.stepModes,
      stepCount: sd.step,
      genCounter: gen.counter,
    };
    trainer.model.dispose();
    trainer.optimizer.dispose();
    trainer.ema!.dispose();
    return out;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function assertClose(a: Float32Array, b: Float32Array, tol: number, what: string): void {
  assert.equal(a.length, b.length, what);
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    assert.ok(d <= tol * (1 + Math.abs(b[i]!)), `${what}[${i}]: ${a[i]} vs ${b[i]}`);
  }
}

function compareRuns(a: RunOut, b: RunOut, tol: number, what: string): void {
  assert.equal(a.metrics.length, b.metrics.length);
  a.metrics.forEach((m, i) => {
    for (const k of ["training/loss_flow", "training/grad_norm", "training/lr"]) {
      const x = m[k] as number, y = b.metrics[i]![k] as number;
      assert.ok(Number.isFinite(x), `${what} ${k} at ${m.step}`);
      assert.ok(
        Math.abs(x - y) <= tol * (1 + Math.abs(y)),
        `${what} ${k} at ${m.step}: ${x} vs ${y}`,
      );
    }
  });
  a.params.forEach((p, i) => assertClose(p, b.params[i]!, tol, `${what} param ${i}`));
  a.ema.forEach((p, i) => assertClose(p, b.ema[i]!, tol, `${what} ema ${i}`));
  a.slots.forEach((p, i) => assertClose(p, b.slots[i]!, tol * 10, `${what} slot ${i}`));
  assert.equal(a.stepCount, b.stepCount);
  assert.equal(a.genCounter, b.genCounter);
}

Deno.test({
  name: "trace: a replayed fit run equals the eager run and the CPU backend",
  ignore: !GPU,
  fn: () =>
    on("webgpu", async () => {
      const traced = await cfmRun(true);
      const eager = await cfmRun(false);
      // Step 1 makes the optimizer slots and the metric accumulators, so it differs from step 2;
      // steps 2 and 3 match and the rest is replayed (log lines keep the trace).
      assert.deepEqual(traced.modes, { eager: 0, captured: 3, replayed: 21 });
      assert.deepEqual(eager.modes, { eager: 24, captured: 0, replayed: 0 });
      // Same kernels on the same buffers: the same bits.
      compareRuns(traced, eager, 0, "traced vs eager");
      assert.equal(traced.metrics.length, 6);
      const cpu = await on("cpu", () => cfmRun(false));
      compareRuns(traced, cpu, 2e-4, "traced vs cpu");
      // The loss fell (the run trained), so the comparison is not between two frozen runs.
      const l = traced.metrics.map((m) => m["training/loss_flow"] as number);
      assert.ok(l[l.length - 1]! < l[0]!, `loss ${l}`);
    }),
});

/** A step: acc += x·w + u·0 (a draw from `gen`), all in place. */
function accStep(acc: Tensor, w: Tensor, gen: Generator, x: Tensor): void {
  const u = gen.uniform([x.shape[0]!]);
  const xs = x.reshape([x.shape[0]!]);
  fusedGroups([[acc, xs, w, u]], [], (a, b, c, r) => a!.add(b!.mul(c!)).add(r!.mul(0)), {
    into: [0],
  });
  xs.dispose();
  u.dispose();
}

Deno.test({
  name: "trace: a shape change falls back to eager execution and traces the new shape",
  ignore: !GPU,
  fn: () =>
    on("webgpu", async () => {
      const lines: string[] = [];
      const tracer = new StepTracer({ log: (l) => lines.push(l) });
      const gen = new Generator(0);
      const acc8 = tensor(new Float32Array(8)), acc4 = tensor(new Float32Array(4));
      const w8 = tensor(new Float32Array(8).fill(2)), w4 = tensor(new Float32Array(4).fill(2));
      const modes: string[] = [];
      let want8 = 0, want4 = 0;
      for (let step = 1; step <= 9; step++) {
        const n = step <= 4 ? 8 : 4;
        const x = tensor(new Float32Array(n).fill(step), [n, 1]);
        modes.push(
          tracer.run(
            { step },
            [x],
            () => accStep(n === 8 ? acc8 : acc4, n === 8 ? w8 : w4, gen, x),
          ),
        );
        if (n === 8) want8 += 2 * step;
        else want4 += 2 * step;
        x.dispose();
      }
      assert.deepEqual(modes, [
        "captured",
        "captured",
        "replayed",
        "replayed",
        "captured",
        "captured",
        "replayed",
        "replayed",
        "replayed",
      ]);
      assert.deepEqual([...await acc8.data()], new Array(8).fill(want8));
      assert.deepEqual([...await acc4.data()], new Array(4).fill(want4));
      assert.equal(gen.counter, 4 * 2 + 5 * 1); // uniform: 4 per block
      assert.ok(lines.some((l) => /input shapes changed \(8x1 → 4x1\)/.test(l)), lines.join("\n"));
      tracer.dispose();
      [acc8, acc4, w8, w4].forEach((t) => t.dispose());
    }),
});

Deno.test({
  name: "trace: a per-step value the trace cannot recompute is never replayed",
  ignore: !GPU,
  fn: () =>
    on("webgpu", async () => {
      const lines: string[] = [];
      const tracer = new StepTracer({ log: (l) => lines.push(l) });
      const acc = tensor([0]);
      const modes: string[] = [];
      for (let step = 1; step <= 6; step++) {
        // The step number enters as a plain constant: its parameter word changes every step.
        modes.push(tracer.run({ step }, [], () => {
          fusedGroups([[acc]], [], (a) => a!.add(step), { into: [0] });
        }));
      }
      assert.equal(modes.includes("replayed"), false);
      assert.deepEqual([...await acc.data()], [21]);
      assert.match(tracer.gaveUp!, /parameter word \d+ changed/);
      assert.equal(lines.length, 1, lines.join("\n")); // said once
      tracer.dispose();
      acc.dispose();
    }),
});

Deno.test({
  name: "trace: freeing a buffer it uses drops the trace; the pool never hands out a pinned one",
  ignore: !GPU,
  fn: () =>
    on("webgpu", async () => {
      const rt = GPU!.runtime;
      const tracer = new StepTracer({ log: null });
      const gen = new Generator(1);
      const acc = tensor(new Float32Array(64));
      let w = tensor(new Float32Array(64).fill(1));
      let want = 0;
      const step = (s: number) => {
        const x = tensor(new Float32Array(64).fill(s), [64, 1]);
        const mode = tracer.run({ step: s }, [x], () => accStep(acc, w, gen, x));
        want += s;
        x.dispose();
        return mode;
      };
      assert.deepEqual([1, 2, 3].map(step), ["captured", "captured", "replayed"]);
      const pinned = new Set(tracer.trace!.pinned());
      assert.ok(pinned.size > 0);
      // Poison: take every buffer the pool has (and more) in the pinned size classes, fill them
      // with NaN and keep them while the trace replays. A pinned buffer among them would make
      // the results NaN; none may be one.
      const sizes = new Set([...pinned].map((b) => b.size));
      const held: GPUBuffer[] = [];
      const nanFill = rt.kernel(
        "test:nan",
        `
        @group(0) @binding(0) var<storage, read_write> o: array<u32>;
        @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
          if (g.x < arrayLength(&o)) { o[g.x] = 0x7fc00000u; }
        }`,
      );
      for (const bytes of sizes) {
        for (let i = 0; i < 16; i++) {
          const b = rt.acquire(bytes);
          assert.equal(pinned.has(b), false, "the pool handed out a buffer the trace pins");
          rt.dispatch(nanFill, [b], null, [Math.ceil(b.size / 256), 1, 1]);
          held.push(b);
        }
      }
      assert.deepEqual([4, 5, 6].map(step), ["replayed", "replayed", "replayed"]);
      assert.deepEqual([...await acc.data()], new Array(64).fill(want));
      // Replacing a tensor the trace reads frees its buffer: the trace is dropped, not replayed
      // on a buffer someone else may now own.
      const w2 = tensor(new Float32Array(64).fill(2));
      w.dispose();
      w = w2;
      assert.equal(tracer.tracing, false);
      assert.deepEqual([7, 8, 9].map(step), ["captured", "captured", "replayed"]);
      want += 7 + 8 + 9; // the three steps above counted s once; w = 2 counts it twice
      assert.deepEqual([...await acc.data()], new Array(64).fill(want));
      held.forEach((b) => rt.release(b));
      tracer.dispose();
      acc.dispose();
      w.dispose();
    }),
});

Deno.test({
  name: "trace: --no-trace makes a task's steps eager, --debug says why a step stays eager",
  ignore: !GPU,
  fn: () =>
    on("webgpu", async () => {
      const run = async (argv: string[]) => {
        const modes: string[] = [];
        const said: string[] = [];
        const orig = console.error;
        console.error = (l: string) => said.push(l);
        try {
          await runTask("demo", async () => {
            const tracer = new StepTracer();
            const acc = tensor([0]);
            for (let step = 1; step <= 5; step++) {
              // A plain constant that changes every step: never replayable.
              modes.push(tracer.run({ step }, [], () => {
                fusedGroups([[acc]], [], (a) => a!.add(step % 2), { into: [0] });
              }));
            }
            assert.deepEqual([...await acc.data()], [3]);
            tracer.dispose();
            acc.dispose();
          }, { argv, exit: () => {}, error: () => {} });
        } finally {
          console.error = orig;
        }
        return { modes, said };
      };
      const off = await run(["--no-trace"]);
      assert.deepEqual(off.modes, ["eager", "eager", "eager", "eager", "eager"]);
      const dbg = await run(["--debug"]);
      assert.deepEqual(dbg.modes, ["captured", "captured", "captured", "captured", "eager"]);
      assert.equal(dbg.said.length, 1);
      assert.match(dbg.said[0]!, /^trace: the step cannot be replayed \(.*parameter word/);
      const quiet = await run([]);
      assert.deepEqual(quiet.modes, dbg.modes);
      assert.deepEqual(quiet.said, []);
    }),
});

Deno.test({
  name: "trace: many replays in one submit each read their own per-step words",
  ignore: !GPU,
  fn: () =>
    on("webgpu", async () => {
      const tracer = new StepTracer({ log: null });
      const acc = tensor([0]);
      const before = GPU!.runtime.stats().submits;
      const modes: string[] = [];
      // 40 one-dispatch replays, more than the trace's ring of uniform buffers: a slot is
      // reused while its earlier words may still be pending, which must not leak into a step.
      for (let step = 1; step <= 40; step++) {
        modes.push(tracer.run({ step }, [], () => {
          fusedGroups([[acc]], [], (a) => a!.add(fx.const(step, (env) => env.step)), {
            into: [0],
          });
        }));
      }
      assert.equal(modes.filter((m) => m === "replayed").length, 38);
      assert.deepEqual([...await acc.data()], [(40 * 41) / 2]);
      // Replays share submits (fewer than one per step).
      assert.ok(GPU!.runtime.stats().submits - before < 20);
      tracer.dispose();
      acc.dispose();
    }),
});
