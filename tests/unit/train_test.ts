/**
 * The training loop (`lib/train`'s `fit`), tested once for every trainer: bit-exact resume
 * on the CPU backend (extra trainer state, dropout and label-dropout streams, the logging
 * window), the schedule kept on resume, no duplicated metric records, gradient
 * accumulation and clipping against closed forms on a linear model, EMA against a hand
 * computation, NaN/Inf detection (step, value, last finite checkpoint), the run lock and
 * stale temporary files.
 */
import { strict as assert } from "node:assert";
import {
  createRun,
  fit,
  type FitOptions,
  Generator,
  getBackend,
  loadCheckpoint,
  lockRunDir,
  nn,
  NonFiniteError,
  openTrainingRun,
  optim,
  readMetrics,
  RunLockedError,
  setBackend,
  type StepContext,
  type Tensor,
  tensor,
  type Trainer,
} from "../../mod.ts";
import { exitCodeOf, runTask } from "../../cli/mod.ts";

async function onCpu<T>(fn: () => Promise<T>): Promise<T> {
  const prev = getBackend().name as "cpu" | "webgpu";
  setBackend("cpu");
  try {
    return await fn();
  } finally {
    setBackend(prev);
  }
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "train-test-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const quiet = { progress: false as const, log: () => {} };

/** A small conditional net with every kind of random stream a model can hold. */
class Net extends nn.Module {
  readonly fc1 = this.module("fc1", new nn.Linear(4, 8, { seed: 1 }));
  // Label dropout with its own stream (forked from the init generator): saved by `fit`.
  readonly emb = this.module("emb", new nn.LabelEmbedder(3, 8, 0.3, { seed: 2 }));
  // Dropout with its own stream, and one without: the latter is bound to the run's stream.
  readonly dropA = this.module("dropA", new nn.Dropout(0.2, { generator: new Generator(9) }));
  readonly dropB = this.module("dropB", new nn.Dropout(0.3));
  readonly fc2 = this.module("fc2", new nn.Linear(8, 2, { seed: 3 }));
  forward(x: Tensor, y: Tensor): Tensor {
    const h = this.fc1.forward(x).add(this.emb.forward(y)).relu();
    return this.fc2.forward(this.dropB.forward(this.dropA.forward(h)));
  }
}

interface Toy {
  trainer: Trainer<Net>;
  memory: Float32Array;
  dispose(): void;
}

/**
 * A trainer whose steps depend on the run's stream (data, labels), the model's streams
 * (dropout, label dropout) and a host state updated from the data (`memory`, checkpointed
 * as `state.memory`), so resuming is exact only if all of them are restored.
 */
function toy(opts: { loadState?: boolean; resetDropout?: boolean } = {}): Toy {
  const model = new Net();
  const memory = new Float32Array(4);
  let batch: { x: Tensor; y: Tensor; target: Tensor };
  const trainer: Trainer<Net> = {
    model,
    optimizer: new optim.Adam({ lr: 0.02 }),
    ema: new optim.EMA(model, { decay: 0.9 }),
    setup(ctx) {
      if (ctx.resumed && opts.resetDropout) model.dropA.generator!.counter = 0;
    },
    prepare(ctx: StepContext<Net>) {
      const g = ctx.generator;
      const x = ctx.track(g.normal([6, 4]));
      const u = g.uniformHost(6);
      const labels = Float32Array.from(u, (v) => Math.floor(v * 3));
      for (let j = 0; j < 4; j++) memory[j] = 0.7 * memory[j]! + 0.3 * (u[j]! + j);
      const target = ctx.track(
        tensor(Float32Array.from({ length: 12 }, (_, i) => memory[i % 4]!), [6, 2]),
      );
      batch = { x, y: ctx.track(tensor(labels)), target };
      return { "training/memory": memory[0]! };
    },
    loss() {
      const d = model.forward(batch.x, batch.y).sub(batch.target);
      return { loss: d.square().mean(), metrics: { "training/abs_err": d.abs().mean() } };
    },
    state: {
      save: () => ({ memory: { shape: [4], data: memory.slice() } }),
      async load(s) {
        if (opts.loadState !== false) memory.set(await s.memory!.data());
      },
    },
  };
  return {
    trainer,
    memory,
    dispose() {
      model.dispose();
      trainer.optimizer.dispose();
      trainer.ema!.dispose();
    },
  };
}

const TOY_FIT: Omit<FitOptions, "run" | "maxSteps"> = {
  logEvery: 2,
  checkpointEvery: 3,
  gradClip: 0.5,
  gradAccumulation: 2,
  lrSchedule: optim.linearWarmup(4),
  seed: 7,
  ...quiet,
};

async function runToy(dir: string, name: string, maxSteps: number, resume = false, o = {}) {
  const run = resume
    ? (await openTrainingRun({ task: "toy", config: {}, resume: `${dir}/${name}` })).run
    : await createRun("toy", { outputDir: dir, expName: name, config: {} });
  const t = toy(o);
  try {
    return await fit(t.trainer, { ...TOY_FIT, run, maxSteps, resume });
  } finally {
    t.dispose();
  }
}

async function tensorsOf(path: string) {
  const ck = await loadCheckpoint(path);
  const out: Record<string, number[]> = {};
  for (const sec of ["model", "ema", "optimizer", "state"] as const) {
    for (const [k, t] of Object.entries(ck[sec] ?? {})) {
      out[`${sec}.${k}`] = [...await (t as Tensor).data()];
      (t as Tensor).dispose();
    }
  }
  return { tensors: out, rng: ck.rng, streams: ck.extra?.streams };
}

Deno.test("fit resumes bit-identically: weights, EMA, optimizer, trainer state, streams, metrics (CPU)", async () => {
  await onCpu(() =>
    withDir(async (dir) => {
      const a = await runToy(dir, "a", 7);
      assert.equal(a.step, 7);
      await runToy(dir, "b", 3);
      // A stale temporary file from an interrupted write is removed on start.
      await Deno.writeTextFile(`${dir}/b/checkpoints/step-000004.safetensors.tmp-0a1b2c`, "x");
      const b = await runToy(dir, "b", 7, true);
      assert.equal(b.startStep, 3);
      assert.equal(b.resumedFrom, `${dir}/b/checkpoints/step-000003.safetensors`);
      await assert.rejects(Deno.stat(`${dir}/b/checkpoints/step-000004.safetensors.tmp-0a1b2c`));
      const ca = await tensorsOf(a.checkpoint!), cb = await tensorsOf(b.checkpoint!);
      assert.ok(Object.keys(ca.tensors).some((k) => k.startsWith("state.memory")));
      assert.ok(Object.keys(ca.tensors).some((k) => k.startsWith("optimizer.exp_avg")));
      assert.deepEqual(cb.tensors, ca.tensors);
      assert.deepEqual(cb.rng, ca.rng);
      // Two model-owned streams: dropA's and the label embedder's (dropB uses the run's).
      assert.deepEqual(Object.keys(ca.streams as object).sort(), [
        "dropA:generator",
        "emb:dropGenerator",
      ]);
      assert.deepEqual(cb.streams, ca.streams);
      // Metrics: b logged its session end at step 3; every other record equals a's exactly,
      // including the step-4 mean over steps 3–4 that straddles the interruption.
      const ma = await readMetrics(`${dir}/a/metrics.jsonl`);
      const mb = await readMetrics(`${dir}/b/metrics.jsonl`);
      assert.deepEqual(ma.map((r) => r.step), [2, 4, 6, 7]);
      assert.deepEqual(mb.map((r) => r.step), [2, 3, 4, 6, 7]);
      assert.deepEqual(mb.filter((r) => r.step !== 3), ma);
      for (
        const k of [
          "training/loss_flow",
          "training/grad_norm",
          "training/lr",
          "training/abs_err",
          "training/memory",
        ]
      ) {
        assert.ok(Number.isFinite(ma[0]![k] as number), k);
      }

      // The test can fail: without the trainer state, or with a dropout stream not
      // restored, the resumed run diverges.
      for (
        const [name, o] of [["c", { loadState: false }], ["d", { resetDropout: true }]] as const
      ) {
        await runToy(dir, name, 3);
        const r = await runToy(dir, name, 7, true, o);
        const cr = await tensorsOf(r.checkpoint!);
        assert.notDeepEqual(cr.tensors["model.fc2.weight"], ca.tensors["model.fc2.weight"], name);
      }
    })
  );
});

Deno.test("fit after a resume keeps no duplicate records and rewrites those past the checkpoint", async () => {
  await onCpu(() =>
    withDir(async (dir) => {
      const run = await createRun("toy", { outputDir: dir, expName: "r", config: {} });
      let t = toy();
      await fit(t.trainer, { ...TOY_FIT, run, maxSteps: 6, logEvery: 1 });
      t.dispose();
      const first = await readMetrics(run.metricsPath);
      assert.deepEqual(first.map((r) => r.step), [1, 2, 3, 4, 5, 6]);
      // Resume from the older step-3 checkpoint: records 4–6 are recomputed, not appended.
      t = toy();
      await fit(t.trainer, {
        ...TOY_FIT,
        run,
        maxSteps: 6,
        logEvery: 1,
        resume: `${dir}/r/checkpoints/step-000003.safetensors`,
      });
      t.dispose();
      assert.deepEqual(await readMetrics(run.metricsPath), first);
    })
  );
});

Deno.test("fit resumed at the end of its budget, its window partly filled, saves the same checkpoint and samples again", async () => {
  await onCpu(() =>
    withDir(async (dir) => {
      // Step 7 is off the log cadence (2): the final checkpoint keeps a window of one step.
      const a = await runToy(dir, "e", 7);
      const before = await tensorsOf(a.checkpoint!);
      const saved = (await loadCheckpoint(a.checkpoint!)).extra?.window;
      assert.ok(Object.keys((saved as { device: object }).device).length > 0);
      const run = (await openTrainingRun({ task: "toy", config: {}, resume: `${dir}/e` })).run;
      const t = toy();
      const finals: boolean[] = [];
      t.trainer.sample = (ctx) => void finals.push(ctx.final);
      try {
        const r = await fit(t.trainer, { ...TOY_FIT, run, maxSteps: 7, resume: true });
        assert.deepEqual([r.startStep, r.step], [7, 7]);
        assert.deepEqual(finals, [true]);
        const again = await loadCheckpoint(r.checkpoint!);
        assert.deepEqual(again.extra?.window, saved);
        assert.deepEqual((await tensorsOf(r.checkpoint!)).tensors, before.tensors);
      } finally {
        t.dispose();
      }
    })
  );
});

Deno.test("openTrainingRun + fit: a resumed run keeps the run's schedule unless given", async () => {
  await withDir(async (dir) => {
    const schedule = ["maxSteps", "logEvery", "checkpointEvery"] as const;
    const start = async (config: Record<string, number>, given: string[], resume?: string) => {
      const r = await openTrainingRun({
        task: "toy",
        config,
        resume,
        given: new Set(given),
        schedule,
        outputDir: dir,
        expName: "s",
        warn: () => {},
      });
      const c = r.config as unknown as Record<string, number>;
      const t = toy();
      try {
        await fit(t.trainer, {
          run: r.run,
          maxSteps: c.maxSteps!,
          logEvery: c.logEvery!,
          checkpointEvery: c.checkpointEvery!,
          resume: r.resume,
          config: r.config,
          ...quiet,
        });
      } finally {
        t.dispose();
      }
      return c;
    };
    const defaults = { maxSteps: 100, logEvery: 100, checkpointEvery: 100, lr: 1 };
    await start({ ...defaults, maxSteps: 4, logEvery: 3, checkpointEvery: 2, lr: 5 }, [
      "maxSteps",
      "logEvery",
      "checkpointEvery",
      "lr",
    ]);
    // Resume giving only a new budget: the stored cadence (log 3, checkpoint 2) and lr stay.
    const c = await start({ ...defaults, maxSteps: 9 }, ["maxSteps"], `${dir}/s`);
    assert.deepEqual(c, { task: "toy", maxSteps: 9, logEvery: 3, checkpointEvery: 2, lr: 5 });
    assert.deepEqual((await readMetrics(`${dir}/s/metrics.jsonl`)).map((r) => r.step), [
      3,
      4,
      6,
      9,
    ]);
    const ck = (await Array.fromAsync(Deno.readDir(`${dir}/s/checkpoints`))).map((e) => e.name);
    assert.deepEqual(ck.sort(), [
      "last.safetensors",
      "step-000006.safetensors",
      "step-000008.safetensors",
      "step-000009.safetensors",
    ]);
    // config.json now records the schedule the run continued with.
    assert.equal(JSON.parse(await Deno.readTextFile(`${dir}/s/config.json`)).max_steps, 9);
  });
});

/** A linear regression trainer on fixed host data; `rows(micro)` picks each micro-batch. */
function linear(
  X: number[][],
  Y: number[],
  rows: (micro: number) => number[],
  opt: optim.Optimizer,
): Trainer<nn.Linear> {
  const model = new nn.Linear(X[0]!.length, 1, { seed: 4 });
  let xb: Tensor, yb: Tensor;
  return {
    model,
    optimizer: opt,
    prepare(ctx) {
      const r = rows(ctx.micro);
      xb = ctx.track(tensor(r.map((i) => X[i]!)));
      yb = ctx.track(tensor(r.map((i) => [Y[i]!])));
    },
    loss: () => ({ loss: model.forward(xb).sub(yb).square().mean() }),
  };
}

/** Host gradient of mean((Xw + b − y)²) over all rows: [dw..., db]. */
function hostGrad(X: number[][], Y: number[], w: number[], b: number): number[] {
  const g = new Array(w.length + 1).fill(0);
  X.forEach((x, i) => {
    const r = x.reduce((a, v, j) => a + v * w[j]!, b) - Y[i]!;
    x.forEach((v, j) => (g[j] += (2 * r * v) / X.length));
    g[w.length] += (2 * r) / X.length;
  });
  return g;
}

const X8 = [[1, 2, 0], [0, 1, -1], [2, 0, 1], [-1, 1, 1], [0.5, -2, 0], [1, 1, 1], [3, 0, -1], [
  0,
  0,
  2,
]];
const Y8 = [1, -1, 2, 0.5, 3, -2, 1, 0];

Deno.test("fit: gradient accumulation over 2 micro-batches equals the big-batch gradient (closed form)", async () => {
  await withDir(async (dir) => {
    const res: number[][] = [];
    for (
      const [name, accum, rows] of [
        ["acc", 2, (m: number) => [0, 1, 2, 3].map((i) => i + 4 * m)],
        ["big", 1, () => [0, 1, 2, 3, 4, 5, 6, 7]],
      ] as const
    ) {
      const t = linear(X8, Y8, rows, new optim.SGD({ lr: 0.1 }));
      const w0 = [...await t.model.weight.data()], b0 = (await t.model.bias!.data())[0]!;
      const run = await createRun("lin", { outputDir: dir, expName: name, config: {} });
      const r = await fit(t, { run, maxSteps: 1, gradAccumulation: accum, logEvery: 1, ...quiet });
      const w1 = [...await t.model.weight.data(), ...await t.model.bias!.data()];
      const g = hostGrad(X8, Y8, w0, b0);
      const want = [...w0, b0].map((v, i) => v - 0.1 * g[i]!);
      w1.forEach((v, i) =>
        assert.ok(Math.abs(v - want[i]!) < 1e-5, `${name}[${i}]: ${v} vs ${want[i]}`)
      );
      const gn = Math.hypot(...g);
      assert.ok(Math.abs(r.lastMetrics!["training/grad_norm"]! - gn) < 1e-4 * gn, name);
      res.push(w1);
      t.model.dispose();
    }
    res[0]!.forEach((v, i) => assert.ok(Math.abs(v - res[1]![i]!) < 1e-6));
  });
});

Deno.test("fit: gradient clipping scales the update to the clip norm and logs the norm before clipping", async () => {
  await withDir(async (dir) => {
    for (const clip of [0.05, 1e6]) {
      const t = linear(X8, Y8, () => [0, 1, 2, 3, 4, 5, 6, 7], new optim.SGD({ lr: 1 }));
      const p0 = [...await t.model.weight.data(), ...await t.model.bias!.data()];
      const g = hostGrad(X8, Y8, p0.slice(0, 3), p0[3]!);
      const gn = Math.hypot(...g);
      const run = await createRun("lin", { outputDir: dir, config: {} });
      const r = await fit(t, { run, maxSteps: 1, gradClip: clip, logEvery: 1, ...quiet });
      const p1 = [...await t.model.weight.data(), ...await t.model.bias!.data()];
      const scale = Math.min(1, clip / (gn + 1e-6));
      p1.forEach((v, i) =>
        assert.ok(Math.abs(v - (p0[i]! - scale * g[i]!)) < 1e-5 * (1 + Math.abs(v)), `clip ${clip}`)
      );
      if (clip < 1) assert.ok(Math.abs(Math.hypot(...p1.map((v, i) => v - p0[i]!)) - clip) < 1e-5);
      assert.ok(Math.abs(r.lastMetrics!["training/grad_norm"]! - gn) < 1e-4 * gn);
      t.model.dispose();
    }
  });
});

Deno.test("fit: EMA weights equal a hand-computed EMA and differ from the initial and raw weights; ctx.emaModel() holds them", async () => {
  await withDir(async (dir) => {
    const model = new nn.Linear(2, 1, { seed: 5, bias: false });
    const c = tensor([[1, -2]]);
    const w0 = [...await model.weight.data()];
    const seen: number[][] = [];
    const ema = new optim.EMA(model, { decay: 0.2 });
    const t: Trainer<nn.Linear> = {
      model,
      optimizer: new optim.SGD({ lr: 0.1 }),
      ema,
      emaModel: () => new nn.Linear(2, 1, { seed: 77, bias: false }),
      // The loss is linear in w: the gradient is c at every step, so w_n = w0 − 0.1·n·c.
      async prepare(ctx) {
        seen.push([...await ctx.emaModel().weight.data()]);
      },
      loss: () => ({ loss: model.weight.mul(c).sum() }),
    };
    const run = await createRun("ema", { outputDir: dir, config: {} });
    const r = await fit(t, { run, maxSteps: 4, ...quiet });
    // s_0 = w0; s_n = d_n·s_(n−1) + (1 − d_n)·w_n with d_n = min(0.2, (1 + n)/(10 + n)).
    let s = [...w0];
    const hand = [s];
    for (let n = 1; n <= 4; n++) {
      const d = Math.min(0.2, (1 + n) / (10 + n));
      s = s.map((v, j) => d * v + (1 - d) * (w0[j]! - 0.1 * n * [1, -2][j]!));
      hand.push(s);
    }
    const ck = await loadCheckpoint(r.checkpoint!);
    const e = [...await ck.ema!.weight!.data()], raw = [...await ck.model.weight!.data()];
    e.forEach((v, j) =>
      assert.ok(Math.abs(v - hand[4]![j]!) < 1e-6, `ema[${j}] ${v} vs ${hand[4]![j]}`)
    );
    assert.ok(e.some((v, j) => Math.abs(v - w0[j]!) > 1e-3), "EMA equals the initial weights");
    assert.ok(e.some((v, j) => Math.abs(v - raw[j]!) > 1e-3), "EMA equals the raw weights");
    // The EMA model seen before step n holds s_(n−1).
    seen.forEach((w, n) => w.forEach((v, j) => assert.ok(Math.abs(v - hand[n]![j]!) < 1e-6)));
    model.dispose();
    ema.dispose();
  });
});

/** A trainer whose value `what` turns non-finite at step `k`. */
function diverging(k: number, what: "loss" | "metric" | "grad"): Trainer<nn.Linear> {
  const model = new nn.Linear(2, 1, { seed: 6, bias: false });
  const x = tensor([[1, 2], [3, -1]]);
  return {
    model,
    optimizer: new optim.SGD({ lr: 0.01 }),
    loss(ctx) {
      const out = model.forward(x);
      let loss = out.square().mean();
      const metrics: Record<string, Tensor> = { "training/aux": out.abs().mean() };
      if (ctx.step >= k) {
        if (what === "loss") loss = loss.mul(tensor(NaN));
        if (what === "metric") {
          metrics["training/aux"] = metrics["training/aux"]!.mul(tensor(Infinity));
        }
        // d/dw √(w·0)² at 0 is 0/0: a finite loss with a NaN gradient.
        if (what === "grad") loss = loss.add(model.weight.mul(0).square().sum().sqrt());
      }
      return { loss, metrics };
    },
  };
}

Deno.test("fit stops at a NaN/Inf naming the step and the value, without checkpointing after it", async () => {
  await withDir(async (dir) => {
    for (
      const [what, name, value] of [
        ["loss", "training/loss_flow", NaN],
        ["metric", "training/aux", Infinity],
        ["grad", "training/grad_norm", NaN],
      ] as const
    ) {
      const run = await createRun("nan", { outputDir: dir, expName: what, config: {} });
      const t = diverging(7, what);
      const err = await fit(t, { run, maxSteps: 20, logEvery: 5, checkpointEvery: 2, ...quiet })
        .then(() => null, (e) => e);
      assert.ok(err instanceof NonFiniteError, `${what}: ${err}`);
      assert.equal(err.step, 7);
      assert.equal(err.metric, name);
      assert.ok(Object.is(err.value, value), `${what}: ${err.value}`);
      assert.match(err.message, new RegExp(`${name} became ${value} at step 7`));
      assert.equal(err.checkpoint, `${run.dir}/checkpoints/step-000006.safetensors`);
      assert.equal(exitCodeOf(err), 3);
      const files = (await Array.fromAsync(Deno.readDir(`${run.dir}/checkpoints`))).map((e) =>
        e.name
      );
      assert.deepEqual(files.sort(), [
        "last.safetensors",
        "step-000002.safetensors",
        "step-000004.safetensors",
        "step-000006.safetensors",
      ]);
      assert.equal((await loadCheckpoint(`${run.dir}/checkpoints/last.safetensors`)).step, 6);
      // The step-5 record is finite; nothing was logged for the window holding step 7.
      assert.deepEqual((await readMetrics(run.metricsPath)).map((r) => r.step), [5]);
      // The lock was released: the run can be resumed (and diverges again at step 7).
      const again = await fit(diverging(7, what), {
        run,
        maxSteps: 20,
        logEvery: 5,
        checkpointEvery: 2,
        resume: true,
        ...quiet,
      }).then(() => null, (e) => e);
      assert.equal(again?.step, 7);
      t.model.dispose();
    }
    // The task wrapper turns it into a one-line message and exit status 3.
    const lines: string[] = [];
    let code = 0;
    await runTask(
      "toy",
      () =>
        Promise.reject(
          new NonFiniteError({ step: 7, name: "training/loss_flow", value: NaN }, null),
        ),
      {
        argv: [],
        error: (l) => lines.push(l),
        exit: (c) => void (code = c),
      },
    );
    assert.equal(code, 3);
    assert.match(lines[0]!, /^toy: training\/loss_flow became NaN at step 7/);
  });
});

Deno.test("fit refuses a second writer of a run directory, in this process and from another", async () => {
  await withDir(async (dir) => {
    const run = await createRun("lock", { outputDir: dir, config: {} });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const slow = linear(X8, Y8, () => [0, 1], new optim.SGD({ lr: 0.1 }));
    const prep = slow.prepare!.bind(slow);
    slow.prepare = async (ctx) => {
      await gate;
      return prep(ctx);
    };
    const first = fit(slow, { run, maxSteps: 2, ...quiet });
    await new Promise((r) => setTimeout(r, 50));
    const other = linear(X8, Y8, () => [0, 1], new optim.SGD({ lr: 0.1 }));
    await assert.rejects(
      fit(other, { run, maxSteps: 2, ...quiet }),
      (e: Error) =>
        e instanceof RunLockedError && e.message.includes(`in use by process ${Deno.pid}`),
    );
    release();
    await first;
    [slow, other].forEach((t) => t.model.dispose());

    // Another process holds the lock: refused with its PID; once it dies, the stale lock
    // (its PID still in the file) is taken over.
    const child = new Deno.Command("deno", {
      env: { XDG_RUNTIME_DIR: "/tmp" },
      args: [
        "eval",
        `import { lockRunDir } from "${new URL("../../lib/train/lock.ts", import.meta.url)}";
        await lockRunDir(${JSON.stringify(run.dir)});
        console.log("locked");
        await new Promise((r) => setTimeout(r, 120000)); // killed long before`,
      ],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = child.stdout.getReader();
    const { value } = await reader.read();
    assert.match(new TextDecoder().decode(value), /locked/);
    await assert.rejects(
      lockRunDir(run.dir),
      (e: Error) =>
        e instanceof RunLockedError && e.message.includes(`in use by process ${child.pid}`),
    );
    child.kill("SIGKILL");
    await child.status;
    reader.releaseLock();
    await child.stdout.cancel();
    const lock = await lockRunDir(run.dir);
    assert.equal(lock.tookOverFrom, child.pid);
    await lock.release();
  });
});

Deno.test("fit's progress after a resume counts only this session's steps (it/s, ETA)", async () => {
  await onCpu(() =>
    withDir(async (dir) => {
      await runToy(dir, "p", 3);
      // A clock that advances 1 s per step: 4 steps after resuming at 3 take 4 s, 1.0 it/s
      // (counting all 7 steps would say 1.8 it/s).
      let clock = 0;
      const lines: string[] = [];
      const t = toy();
      const prep = t.trainer.prepare!.bind(t.trainer);
      t.trainer.prepare = (ctx) => {
        if (ctx.micro === 0) clock += 1000;
        return prep(ctx);
      };
      const run = (await openTrainingRun({ task: "toy", config: {}, resume: `${dir}/p` })).run;
      await fit(t.trainer, {
        ...TOY_FIT,
        run,
        maxSteps: 7,
        resume: true,
        label: "toy",
        progress: { tty: false, every: 2, write: (s) => lines.push(s), now: () => clock },
      });
      t.dispose();
      assert.match(lines.join(""), /toy step 4\/7 loss \S+ 1\.0 it\/s eta 3s/);
      // The count starts at the resumed step: the first line says so, and no line counts
      // from 0 (a step-1 line would mean the bar restarted).
      assert.match(lines[0]!, /^toy start 3\/7 \(resumed; 4 to go\)/);
      assert.deepEqual(
        lines.slice(1, -1).map((l) => Number(/toy step (\d+)\//.exec(l)?.[1])),
        [4, 6, 7],
      );
      assert.match(
        lines[lines.length - 1]!,
        /toy done 7\/7 steps \(4 this session\) in 4\.0s \(1\.0 it\/s\)/,
      );
    })
  );
});
