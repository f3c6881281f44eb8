/**
 * Kill-and-resume, once per trainer (issue 15): a run is SIGKILLed at a seeded point inside
 * a checkpoint write, its `--resume` is SIGKILLed again at a seeded point anywhere (its own
 * start-up included), and a last `--resume` finishes. On the CPU backend the result must
 * equal an uninterrupted run bit for bit (weights, EMA, optimizer, trainer state, random
 * streams, metrics.jsonl), with no `*.tmp-*` leftover and no duplicated metric step.
 *
 * The kills are real (a child process, SIGKILL); the points are chosen among the numbered
 * file mutations of the uninterrupted run (see tests/_kill.ts for why that covers every
 * state a kill can leave).
 */
import { strict as assert } from "node:assert";
import { getBackend, loadCheckpoint, readMetrics, setBackend, type Tensor } from "../../mod.ts";
import { type FsOp, instrumentFs } from "../_kill.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const PERMS = ["--allow-read=.,/tmp", "--allow-write=/tmp", "--allow-env=FLOWGPU_BACKEND"];

interface Case {
  /** Task name (the test label). */
  name: string;
  /** The task module, relative to the repository root. */
  module: string;
  /** Flags of a tiny fresh run (budget, cadence and output dir are added). */
  flags: string[];
}

const TINY_SCHEDULE = ["--max-train-steps=6", "--log-every=3", "--checkpoint-every=2"];
const SHORTCUT = ["--dataset=8gaussians", "--hidden=8", "--depth=1", "--batch-size=16"];

const CASES: Case[] = [
  {
    name: "train:cfm",
    module: "tasks/train_cfm.ts",
    flags: ["--dataset=checkerboard", "--batch-size=16", "--hidden=8", "--depth=1"]
      .concat(["--sample-steps=2", "--ot=sample"]),
  },
  {
    name: "train:stablevm",
    module: "tasks/train_stablevm.ts",
    flags: ["--batch-size=16", "--hidden=8", "--blocks=1", "--fisher-samples=16"]
      .concat(["--sample-steps=2"]),
  },
  {
    name: "gmm",
    module: "tasks/gmm.ts",
    flags: ["--exp=stable_vm", "--reference=bank", "--no-plot-variance", "--dim=2"]
      .concat(["--num-modes=4", "--batch-size=16", "--ref-batch-size=32"])
      .concat(["--fisher-samples=16", "--eval-every=3"]),
  },
  {
    name: "train:flowmap",
    module: "tasks/train_flowmap.ts",
    flags: ["--method=psd", "--psd-mode=uniform", "--batch-size=16", "--hidden=8"]
      .concat(["--depth=1", "--ema-decay=0.9", "--eval-samples=0"]),
  },
  {
    name: "train:shortcut",
    module: "tasks/train_shortcut.ts",
    flags: [...SHORTCUT, "--eval-samples=16", "--ema-decay=0.9"],
  },
  {
    name: "train:anchor",
    module: "tasks/train_anchor.ts",
    flags: [...SHORTCUT, "--eval-samples=16"],
  },
  {
    name: "train:local",
    module: "tasks/train_local.ts",
    flags: [...SHORTCUT, "--eval-samples=16"],
  },
];

/** A small seeded generator (mulberry32) for the kill points. */
function rng(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
}

const hash = (s: string) =>
  [...s].reduce((h, c) => Math.imul(h ^ c.charCodeAt(0), 16777619), 2166136261);

async function onCpu<T>(fn: () => Promise<T>): Promise<T> {
  const prev = getBackend().name as "cpu" | "webgpu";
  setBackend("cpu");
  const log = console.log, err = console.error, warn = console.warn;
  console.log = console.error = console.warn = () => {};
  try {
    return await fn();
  } finally {
    console.log = log;
    console.error = err;
    console.warn = warn;
    setBackend(prev);
  }
}

/** Run the task in a child process, SIGKILLed before its `k`-th file mutation. */
async function killedAt(c: Case, k: number, argv: string[]): Promise<string> {
  const child = new Deno.Command("deno", {
    args: ["run", ...PERMS, "tests/_kill.ts", String(k), c.module, ...argv],
    cwd: ROOT,
    env: { FLOWGPU_BACKEND: "cpu", XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
  try {
    while (!out.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      out += value;
    }
  } finally {
    clearTimeout(timer);
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    const st = await child.status;
    reader.releaseLock();
    await child.stdout.cancel().catch(() => {});
    const err = new TextDecoder().decode(await new Response(child.stderr).arrayBuffer());
    assert.ok(
      out.startsWith(`PAUSED ${k} `),
      `${c.name}: the child should pause at operation ${k}; exit ${st.code}, stdout ${
        JSON.stringify(out)
      }, stderr ${err.slice(-2000)}`,
    );
    assert.equal(st.signal, "SIGKILL");
  }
  return out.trim();
}

async function filesUnder(dir: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(`${dir}/${rel}`)) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory) out.push(...await filesUnder(dir, p));
    else out.push(p);
  }
  return out.sort();
}

/**
 * Assert two checkpoints hold the same step, random streams, logging window and tensors,
 * bit for bit (the first differing element is named; `node:assert`'s diff of long arrays
 * would take minutes).
 */
async function assertSameCheckpoint(pa: string, pb: string): Promise<number> {
  const [a, b] = [await loadCheckpoint(pa), await loadCheckpoint(pb)];
  const { config: _a, ...ea } = a.extra ?? {};
  const { config: _b, ...eb } = b.extra ?? {};
  assert.deepEqual([b.step, b.rng, eb], [a.step, a.rng, ea], `${pb}: step, rng or streams`);
  let n = 0;
  for (const sec of ["model", "ema", "optimizer", "state"] as const) {
    const [ta, tb] = [a[sec] ?? {}, b[sec] ?? {}] as Record<string, Tensor>[];
    assert.deepEqual(Object.keys(tb!).sort(), Object.keys(ta!).sort(), `${pb}: ${sec} names`);
    for (const [k, t] of Object.entries(ta!)) {
      const [x, y] = [await t.data(), await tb![k]!.data()];
      const i = x.findIndex((v, j) => !Object.is(v, y[j]));
      assert.ok(x.length === y.length && i < 0, `${pb}: ${sec}.${k}[${i}] ${y[i]} != ${x[i]}`);
      n++;
    }
  }
  for (const ck of [a, b]) {
    for (const sec of [ck.model, ck.ema, ck.optimizer, ck.state]) {
      Object.values(sec ?? {}).forEach((t) => (t as Tensor).dispose());
    }
  }
  return n;
}

for (const c of CASES) {
  Deno.test(`kill -9 and --resume: ${c.name} ends bit-identical to an uninterrupted run (CPU)`, async () => {
    const out = await Deno.makeTempDir({ prefix: "kill-resume-" });
    try {
      const flags = [...c.flags, ...TINY_SCHEDULE, `--output-dir=${out}`];
      const { main } = await import(new URL(`../../${c.module}`, import.meta.url).href);
      // The uninterrupted run, in this process, with its file mutations numbered.
      const ops: FsOp[] = [];
      const restore = instrumentFs((op) => void ops.push(op));
      try {
        await onCpu(() => main([...flags, "--exp-name=whole"]));
      } finally {
        restore();
      }
      const pick = rng(hash(c.name));
      const inCkpt = ops.filter((o) => /checkpoints\/[^ ]*\.tmp-/.test(o.label));
      assert.ok(inCkpt.length >= 4, `${c.name}: checkpoint writes seen: ${inCkpt.length}`);
      const k1 = inCkpt[pick(inCkpt.length)]!.n;
      const k2 = 1 + pick(ops.length - k1);

      const split = `${out}/split`;
      const first = await killedAt(c, k1, [...flags, "--exp-name=split"]);
      const debris = (await filesUnder(split)).filter((f) => /\.tmp-/.test(f));
      assert.ok(debris.length > 0 || /^PAUSED \d+ open /.test(first), `${first}: no temp file`);
      await killedAt(c, k2, ["--resume", split, "--max-train-steps=6"]);
      await onCpu(() => main(["--resume", split, "--max-train-steps=6"]));

      const whole = `${out}/whole`;
      const [a, b] = [await filesUnder(whole), await filesUnder(split)];
      assert.deepEqual(b.filter((f) => /\.tmp-/.test(f)), [], "temporary files left over");
      assert.deepEqual(b, a, "the same files as the uninterrupted run");
      const [ma, mb] = [
        await readMetrics(`${whole}/metrics.jsonl`),
        await readMetrics(`${split}/metrics.jsonl`),
      ];
      const keyed = mb.map((r) => `${r.step} ${Object.keys(r).sort().join(",")}`);
      assert.equal(new Set(keyed).size, keyed.length, `duplicate metric records: ${keyed}`);
      assert.deepEqual(mb, ma, "metrics.jsonl equals the uninterrupted run's");
      assert.ok(ma.some((r) => r.step === 6));
      for (const f of a.filter((f) => f.endsWith(".safetensors"))) {
        assert.ok(await assertSameCheckpoint(`${whole}/${f}`, `${split}/${f}`) > 0, f);
      }
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  });
}

/** Poll `fn` every 50 ms until it returns a value other than null, or fail after `ms`. */
async function until<T>(what: string, ms: number, fn: () => Promise<T | null>): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn().catch(() => null);
    if (v !== null) return v;
    assert.ok(Date.now() < end, `timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const CFM_TINY = ["--dataset=checkerboard", "--batch-size=16", "--hidden=8", "--depth=1"]
  .concat(["--sample-steps=2", "--log-every=5", "--checkpoint-every=50"]);

/** Start a long train:cfm run; resolves once it has logged twice. */
async function startLong(cmd: string[], dir: string) {
  const child = new Deno.Command("deno", {
    args: [...cmd, ...CFM_TINY, "--max-train-steps=1000000", `--output-dir=${dir}`, "--exp-name=r"],
    cwd: ROOT,
    env: { FLOWGPU_BACKEND: "cpu", XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1" },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const err = new Response(child.stderr).text();
  await until("two metrics records", 60_000, async () => {
    const n = (await Deno.readTextFile(`${dir}/r/metrics.jsonl`)).split("\n").length - 1;
    return n >= 2 ? n : null;
  });
  const pid = Number((await Deno.readTextFile(`${dir}/r/.lock`)).trim());
  assert.ok(pid > 0);
  return { child, err, pid };
}

Deno.test("kill -9 of `deno task`: the orphaned trainer stops within seconds at a step boundary; --resume continues bit-identically", async () => {
  const out = await Deno.makeTempDir({ prefix: "kill-parent-" });
  try {
    const { child, err, pid } = await startLong(["task", "train:cfm"], out);
    assert.notEqual(pid, child.pid, "the trainer is a child of `deno task`");
    child.kill("SIGKILL");
    const t0 = Date.now();
    await child.status;
    const { lockRunDir } = await import("../../mod.ts");
    // The trainer's lock (flock) is free once it has exited.
    const lock = await until("the trainer to exit", 15_000, () => lockRunDir(`${out}/r`));
    const took = Date.now() - t0;
    await lock.release();
    assert.ok(took < 10_000, `the trainer ran on for ${took} ms after its parent died`);
    const log = await err;
    const m = /stopped at step (\d+) of 1000000 \(parent process (\d+) exited\)/.exec(log);
    assert.ok(m, log.slice(-1500));
    assert.equal(Number(m[2]), child.pid);
    assert.doesNotMatch(log, /^\s+at /m, "no stack trace");
    const n = Number(m[1]);
    await Deno.stat(`${out}/r/checkpoints/step-${String(n).padStart(6, "0")}.safetensors`);

    // Resumed to a budget a little past the stop, it equals one uninterrupted run.
    const { main } = await import("../../tasks/train_cfm.ts");
    const end = `--max-train-steps=${n + 3}`;
    await onCpu(() => main(["--resume", `${out}/r`, end]));
    await onCpu(() => main([...CFM_TINY, end, `--output-dir=${out}`, "--exp-name=whole"]));
    const [ma, mb] = [
      await readMetrics(`${out}/whole/metrics.jsonl`),
      await readMetrics(`${out}/r/metrics.jsonl`),
    ];
    assert.deepEqual(mb.map((r) => r.step), ma.map((r) => r.step));
    assert.deepEqual(mb, ma);
    const last = "checkpoints/last.safetensors";
    assert.ok(await assertSameCheckpoint(`${out}/whole/${last}`, `${out}/r/${last}`) > 0);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("SIGTERM: the trainer checkpoints the step it finished and exits 143 with one line", async () => {
  const out = await Deno.makeTempDir({ prefix: "kill-term-" });
  try {
    const { child, err } = await startLong(["run", ...PERMS, "tasks/train_cfm.ts"], out);
    child.kill("SIGTERM");
    const st = await child.status;
    const log = await err;
    assert.equal(st.code, 143, log.slice(-1500));
    const m =
      /\ntrain:cfm: stopped at step (\d+) of 1000000 \(received SIGTERM\); checkpoint (\S+);/
        .exec(log);
    assert.ok(m, log.slice(-1500));
    assert.doesNotMatch(log, /^\s+at /m, "no stack trace");
    const ck = await loadCheckpoint(m[2]!);
    assert.equal(ck.step, Number(m[1]));
    const steps = (await readMetrics(`${out}/r/metrics.jsonl`)).map((r) => r.step as number);
    assert.ok(steps.every((s) => s <= ck.step && s % 5 === 0), `${steps}`);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("a permission error prints the full `deno run` command with it added (exit 2, no stack); --debug adds the stack", async () => {
  const run = async (...extra: string[]) => {
    const o = await new Deno.Command("deno", {
      args: ["run", ...PERMS, "tasks/train_cfm.ts", "--output-dir=/var/tmp/flowgpu-nc", ...extra],
      cwd: ROOT,
      env: { FLOWGPU_BACKEND: "cpu", XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1" },
      stdout: "null",
      stderr: "piped",
    }).output();
    return { code: o.code, err: new TextDecoder().decode(o.stderr) };
  };
  const a = await run("--max-train-steps=2");
  assert.equal(a.code, 2, a.err);
  const lines = a.err.trim().split("\n");
  assert.equal(lines.length, 1, a.err);
  // deno.json's command, with /var/tmp/flowgpu-nc added to both lists and the flags kept.
  const cfg = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  const want = (cfg.tasks["train:cfm"] as string)
    .replace(/--allow-read=(\S+)/, "--allow-read=$1,/var/tmp/flowgpu-nc")
    .replace(/--allow-write=(\S+)/, "--allow-write=$1,/var/tmp/flowgpu-nc");
  assert.ok(
    lines[0]!.startsWith('train:cfm: Requires read access to "/var/tmp/flowgpu-nc/'),
    lines[0],
  );
  assert.ok(
    lines[0]!.endsWith(
      `; \`deno task\` cannot grant it, so run: ${want} --output-dir=/var/tmp/flowgpu-nc --max-train-steps=2`,
    ),
    lines[0],
  );
  const b = await run("--max-train-steps=2", "--debug");
  assert.equal(b.code, 2);
  // The run directory is named by the second it was made: the two runs may straddle one.
  const undated = (l: string) => l.replace(/train-cfm-\d{8}-\d{6}/, "train-cfm-<time>");
  assert.equal(undated(b.err.split("\n")[0]!), undated(lines[0]!));
  assert.match(b.err, /NotCapable: Requires read access/);
  assert.match(b.err, /^\s+at .*lib\/io\/run\.ts/m, "the stack with --debug");
});
