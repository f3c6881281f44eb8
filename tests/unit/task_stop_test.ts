/**
 * @file `runTask` (issue 15, findings 4 and 8): user errors are one line with exit 2 and a
 * stack only with `--debug`; Deno's file-system errors count as user errors; a stop request
 * (here: the parent PID changing, as when `deno task` is killed with SIGKILL) aborts
 * `taskSignal()`, and `fit` then checkpoints the step it finished and stops with 128 + signal.
 * The real-process versions (SIGKILL of `deno task`, SIGTERM, a missing permission) are in
 * tests/tasks/kill_resume_test.ts.
 */
import { strict as assert } from "node:assert";
import {
  createRun,
  fit,
  loadCheckpoint,
  nn,
  optim,
  readMetrics,
  type Tensor,
  tensor,
  TrainingStoppedError,
} from "../../mod.ts";
import { exitCodeOf, runTask, taskSignal, TaskStop } from "../../cli/mod.ts";

/** Run `main` under runTask with captured output; returns the lines and the exit code. */
async function capture(
  main: (argv: string[]) => Promise<unknown>,
  argv: string[],
  extra = {},
): Promise<{ lines: string[]; code: number | null }> {
  const lines: string[] = [];
  let code: number | null = null;
  await runTask("demo", main, {
    argv,
    error: (l) => lines.push(l),
    exit: (c) => void (code = c),
    ...extra,
  });
  return { lines, code };
}

Deno.test("runTask: a user error is one line with exit 2; --debug adds the stack and is not passed on", async () => {
  const seen: string[][] = [];
  const bad = (argv: string[]) => {
    seen.push(argv);
    return Promise.reject(new RangeError("Expected --steps >= 1 but found 0"));
  };
  const a = await capture(bad, ["--steps", "0"]);
  assert.deepEqual(a.lines, ["demo: Expected --steps >= 1 but found 0"]);
  assert.equal(a.code, 2);
  const b = await capture(bad, ["--debug", "--steps", "0"]);
  assert.equal(b.code, 2);
  assert.equal(b.lines.length, 1);
  const [first, ...rest] = b.lines[0]!.split("\n");
  assert.equal(first, "demo: Expected --steps >= 1 but found 0");
  assert.match(rest[0]!, /^RangeError: Expected --steps >= 1/);
  assert.ok(rest.some((l) => /^\s+at .*task_stop_test\.ts/.test(l)), b.lines[0]);
  assert.deepEqual(seen, [["--steps", "0"], ["--steps", "0"]]);
  // A bug (not a user error) is re-thrown with its stack.
  await assert.rejects(capture(() => Promise.reject(new Error("bug")), []), /bug/);
});

Deno.test("runTask: Deno's file-system errors are user errors (exit 2) naming the path", async () => {
  for (
    const [e, code] of [
      [new Deno.errors.NotFound("No such file or directory: readfile 'x.npz'"), 2],
      [new Deno.errors.PermissionDenied("Permission denied: open '/root/x'"), 2],
      [new Deno.errors.IsADirectory("Is a directory: read 'runs'"), 2],
      [new Error("plain"), null],
    ] as const
  ) {
    assert.equal(exitCodeOf(e), code, e.message);
  }
  const r = await capture(() => Deno.readTextFile("/tmp/flowgpu-no-such-file.json"), []);
  assert.equal(r.code, 2);
  assert.match(r.lines[0]!, /^demo: .*\/tmp\/flowgpu-no-such-file\.json/);
});

Deno.test("runTask: the parent exiting aborts taskSignal(); fit checkpoints the finished step and exits 129", async () => {
  const dir = await Deno.makeTempDir({ prefix: "task-stop-" });
  try {
    let ppid = 1000;
    const model = new nn.Linear(2, 1, { seed: 0 });
    const x = tensor([[1, 2], [3, 4]]), y = tensor([[1], [2]]);
    let stoppedAt = 0;
    const r = await capture(
      async () => {
        const run = await createRun("demo", { outputDir: dir, expName: "r", config: {} });
        await fit({
          model,
          optimizer: new optim.Adam({ lr: 0.05 }),
          async prepare(ctx) {
            if (ctx.step === 3) {
              ppid = 1; // re-parented to init: the parent is gone
              await new Promise((res) => setTimeout(res, 60)); // a slow step; the watcher polls
              assert.ok(taskSignal()!.aborted, "aborted during step 3");
              stoppedAt = ctx.step;
            }
          },
          loss: () => ({ loss: model.forward(x).sub(y).square().mean() as Tensor }),
        }, {
          run,
          maxSteps: 1000,
          logEvery: 2,
          checkpointEvery: 100,
          progress: false,
          log: () => {},
          signal: taskSignal(),
        });
      },
      [],
      { watch: true, parentPid: () => ppid, pollMs: 5, graceMs: 60_000 },
    );
    assert.equal(stoppedAt, 3);
    assert.equal(r.code, 129);
    assert.equal(r.lines.length, 2, r.lines.join("\n"));
    assert.match(r.lines[0]!, /^demo: parent process 1000 exited; stopping at the next step/);
    assert.match(
      r.lines[1]!,
      /^demo: stopped at step 3 of 1000 \(parent process 1000 exited\); checkpoint \S+step-000003\.safetensors; continue with --resume /,
    );
    const ck = await loadCheckpoint(`${dir}/r/checkpoints/step-000003.safetensors`);
    assert.equal(ck.step, 3);
    // The step finished before the stop is in the checkpoint (its window too): no record past it.
    assert.deepEqual((await readMetrics(`${dir}/r/metrics.jsonl`)).map((m) => m.step), [2]);
    assert.equal(taskSignal(), undefined, "cleared after the task");
    model.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fit honours a stop request between log reads: a signal's timer runs within ~200 ms of steps that never wait", async () => {
  const dir = await Deno.makeTempDir({ prefix: "task-stop-yield-" });
  try {
    const model = new nn.Linear(2, 1, { seed: 0 });
    const x = tensor([[1, 2], [3, 4]]), y = tensor([[1], [2]]);
    const stop = new AbortController();
    // A timer, like a signal listener, is a macrotask: it runs only when the loop yields.
    setTimeout(() => stop.abort(new TaskStop("received SIGTERM", 143)), 100);
    const run = await createRun("demo", { outputDir: dir, expName: "y", config: {} });
    const err = await fit({
      model,
      optimizer: new optim.Adam({ lr: 0.05 }),
      prepare() {
        // A slow step that never awaits anything (as GPU steps between two log reads).
        const t = performance.now();
        while (performance.now() - t < 30) { /* busy */ }
      },
      loss: () => ({ loss: model.forward(x).sub(y).square().mean() as Tensor }),
    }, {
      run,
      maxSteps: 300,
      logEvery: 1_000_000,
      checkpointEvery: 1_000_000,
      progress: false,
      log: () => {},
      signal: stop.signal,
    }).then(() => null, (e) => e);
    assert.ok(err instanceof TrainingStoppedError, `fit ran to the end: ${err}`);
    // 100 ms of timer plus at most 200 ms between yields, at 30 ms a step: about 10 steps.
    assert.ok(err.step >= 3 && err.step <= 30, `stopped at step ${err.step}`);
    assert.equal(err.exitCode, 143);
    model.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("TaskStop and TrainingStoppedError carry the exit status of the request", () => {
  const reason = new TaskStop("received SIGTERM", 143);
  const e = new TrainingStoppedError(7, 10, "runs/a", null, reason);
  assert.equal(exitCodeOf(e), 143);
  assert.equal(
    e.message,
    "stopped at step 7 of 10 (received SIGTERM); continue with --resume runs/a",
  );
  assert.equal(new TrainingStoppedError(0, 10, "runs/a", null, undefined).exitCode, 130);
});

/** A linear trainer whose `sample` logs one eval record per call. */
function linearTrainer(calls: number[]) {
  const model = new nn.Linear(2, 1, { seed: 0 });
  const x = tensor([[1, 2], [3, 4]]), y = tensor([[1], [2]]);
  return {
    model,
    optimizer: new optim.Adam({ lr: 0.05 }),
    loss: () => ({ loss: model.forward(x).sub(y).square().mean() as Tensor }),
    async sample(ctx: { step: number; log(r: Record<string, number>): Promise<void> }) {
      calls.push(ctx.step);
      await ctx.log({ "eval/w": (await model.weight.data())[0]! });
    },
  };
}

const QUIET = {
  progress: false as const,
  log: () => {},
  logEvery: 2,
  checkpointEvery: 2,
  sampleEvery: 2,
};

Deno.test("fit --resume: a run killed before its first checkpoint starts over; one killed after its last resumes at the end", async () => {
  const dir = await Deno.makeTempDir({ prefix: "resume-edges-" });
  try {
    // Uninterrupted: 4 steps.
    const calls: number[] = [];
    const whole = await createRun("t", { outputDir: dir, expName: "whole", config: {} });
    const tw = linearTrainer(calls);
    await fit(tw, { ...QUIET, run: whole, maxSteps: 4 });
    const want = await readMetrics(`${dir}/whole/metrics.jsonl`);
    assert.deepEqual(want.map((r) => r.step), [2, 2, 4, 4]); // step 2: log + sample
    assert.deepEqual(calls, [2, 4]);

    // Killed after logging step 2 but before its checkpoint: no checkpoint file at all.
    const run = await createRun("t", { outputDir: dir, expName: "early", config: {} });
    await Deno.writeTextFile(run.metricsPath, JSON.stringify(want[0]) + '\n{"step": 2, "tor');
    const t1 = linearTrainer([]);
    const r1 = await fit(t1, { ...QUIET, run, maxSteps: 4, resume: true });
    assert.equal(r1.startStep, 0);
    assert.deepEqual(
      await readMetrics(run.metricsPath),
      want,
      "records redone once, torn line gone",
    );

    // Killed between step-4's numbered file and last.safetensors (which still holds step 2).
    const ck = `${dir}/early/checkpoints`;
    await Deno.copyFile(`${ck}/step-000002.safetensors`, `${ck}/last.safetensors`);
    const again: number[] = [];
    const t2 = linearTrainer(again);
    const r2 = await fit(t2, { ...QUIET, run, maxSteps: 4, resume: true });
    assert.equal(r2.startStep, 4);
    assert.deepEqual(again, [4], "the final sample runs again (for the task's figures)");
    assert.equal((await loadCheckpoint(`${ck}/last.safetensors`)).step, 4);
    assert.deepEqual(await readMetrics(run.metricsPath), want, "its record is not logged twice");
    [tw, t1, t2].forEach((t) => t.model.dispose());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
