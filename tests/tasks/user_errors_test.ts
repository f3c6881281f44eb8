/**
 * Findings 1, 2 and 4 of issue 15 through the tasks' real startup path (`runTask`, in this
 * process): what a careless user types ends in one line naming the input, with exit 2 (3 for
 * a diverged run), never a stack trace; `train:stablevm` diverging to NaN stops, keeping the
 * last finite checkpoint; `train:stablevm --resume` keeps the run's schedule.
 */
import { strict as assert } from "node:assert";
import { getBackend, loadCheckpoint, readMetrics, setBackend } from "../../mod.ts";
import { runTask } from "../../cli/mod.ts";
import { main as svMain } from "../../tasks/train_stablevm.ts";
import { main as cfmMain } from "../../tasks/train_cfm.ts";

const SV_TINY = ["--batch-size=16", "--hidden=8", "--blocks=1", "--fisher-samples=16"]
  .concat(["--sample-steps=2"]);

/** Run a task's main as `deno task` would; returns its stderr lines and exit status. */
async function asTask(name: string, main: (a: string[]) => Promise<unknown>, argv: string[]) {
  const lines: string[] = [];
  let code = 0;
  const prev = getBackend().name as "cpu" | "webgpu";
  setBackend("cpu");
  const err = console.error, warn = console.warn, log = console.log;
  console.error = console.warn = console.log = () => {};
  try {
    await runTask(name, main, {
      argv,
      error: (l) => lines.push(l),
      exit: (c) => void (code = c),
      commandLine: () => Promise.resolve(["deno", "run", "--allow-read=.", "tasks/x.ts"]),
    });
  } finally {
    console.error = err;
    console.warn = warn;
    console.log = log;
    setBackend(prev);
  }
  return { lines, code };
}

Deno.test("bad --resume and --data-dir values are one line naming the input, exit 2", async () => {
  const dir = await Deno.makeTempDir({ prefix: "user-errors-" });
  try {
    await Deno.mkdir(`${dir}/empty`);
    await Deno.writeTextFile(`${dir}/notes.txt`, "hello");
    const cases: [(a: string[]) => Promise<unknown>, string[], RegExp][] = [
      [svMain, ["--resume", `${dir}/none`], /^sv: --resume \S+\/none: no such run directory/],
      [
        svMain,
        ["--resume", `${dir}/notes.txt`],
        /notes\.txt: expected a run directory or a \.safetensors checkpoint, but it is a file$/,
      ],
      [cfmMain, ["--resume", `${dir}/empty/config.json`], /empty\/config\.json does not exist$/],
      [svMain, ["--resume", `${dir}/empty`], /empty\/config\.json does not exist$/],
      [svMain, ["--data-dir", `${dir}/empty`], /^sv: --data-dir: .*empty\/data\.npz/],
      [svMain, ["--data-dir", `${dir}/notes.txt`], /notes\.txt.*not a ZIP\/\.npz file/],
      // Outside this test's --allow-read: the command to run instead grants it.
      [
        svMain,
        ["--data-dir", "/etc"],
        /^sv: --data-dir: Requires read access to "\/etc"; `deno task` cannot grant it, so run: deno run --allow-read=\.,\/etc tasks\/x\.ts --data-dir \/etc$/,
      ],
    ];
    for (const [main, argv, want] of cases) {
      const r = await asTask("sv", main, argv);
      assert.equal(r.code, 2, `${argv.join(" ")}: ${r.lines}`);
      assert.equal(r.lines.length, 1, argv.join(" "));
      assert.doesNotMatch(r.lines[0]!, /\n/, "one line");
      assert.match(r.lines[0]!, want);
    }
    // The run given as its config.json is resumed (it was a stack trace).
    await asTask("sv", svMain, [
      ...SV_TINY,
      "--max-train-steps=2",
      `--output-dir=${dir}`,
      "--exp-name=r",
    ]);
    const r = await asTask("sv", svMain, [
      "--resume",
      `${dir}/r/config.json`,
      "--max-train-steps=3",
    ]);
    assert.deepEqual(r, { lines: [], code: 0 });
    assert.equal((await loadCheckpoint(`${dir}/r/checkpoints/last.safetensors`)).step, 3);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("train:stablevm --learning-rate 1e30 stops at the NaN with exit 3 and keeps the last finite checkpoint", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sv-nan-" });
  try {
    const r = await asTask("train:stablevm", svMain, [
      ...SV_TINY,
      "--learning-rate=1e30",
      "--max-train-steps=20",
      "--log-every=5",
      "--checkpoint-every=1",
      `--output-dir=${dir}`,
      "--exp-name=nan",
    ]);
    assert.equal(r.code, 3, r.lines.join("\n"));
    assert.equal(r.lines.length, 1);
    const m =
      /^train:stablevm: training\/loss_flow became (NaN|-?Infinity) at step (\d+); .*step-0+(\d+)\.safetensors\)$/
        .exec(r.lines[0]!);
    assert.ok(m, r.lines[0]);
    const [bad, kept] = [Number(m[2]), Number(m[3])];
    assert.equal(kept, bad - 1, "the checkpoint before the bad step is kept");
    const ck = await loadCheckpoint(`${dir}/nan/checkpoints/last.safetensors`);
    assert.equal(ck.step, kept);
    for (const t of Object.values(ck.model)) {
      assert.ok((await t.data()).every(Number.isFinite), "the kept weights are finite");
    }
    const recs = await readMetrics(`${dir}/nan/metrics.jsonl`);
    assert.ok(recs.every((x) => (x.step as number) < bad), "nothing logged from the bad step on");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("train:stablevm --resume keeps --max-train-steps 30 and --checkpoint-every 10 of the run", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sv-sched-" });
  try {
    const sched = ["--max-train-steps=30", "--checkpoint-every=10", "--log-every=10"];
    // Killed (here: stopped) after 10 steps; the resume gives no schedule flags at all.
    await asTask("sv", svMain, [...SV_TINY, ...sched, `--output-dir=${dir}`, "--exp-name=r"]);
    await Deno.remove(`${dir}/r/checkpoints/step-000030.safetensors`);
    await Deno.remove(`${dir}/r/checkpoints/step-000020.safetensors`);
    await Deno.remove(`${dir}/r/checkpoints/last.safetensors`);
    const r = await asTask("sv", svMain, ["--resume", `${dir}/r`]);
    assert.deepEqual(r, { lines: [], code: 0 });
    const names = (await Array.fromAsync(Deno.readDir(`${dir}/r/checkpoints`))).map((e) => e.name);
    assert.deepEqual(names.sort(), [
      "last.safetensors",
      "step-000010.safetensors",
      "step-000020.safetensors",
      "step-000030.safetensors",
    ]);
    const recs = await readMetrics(`${dir}/r/metrics.jsonl`);
    const train = recs.filter((x) => "training/loss_flow" in x).map((x) => x.step);
    assert.deepEqual(train, [10, 20, 30]);
    assert.deepEqual(recs.filter((x) => "eval/fisher_divergence" in x).map((x) => x.step), [30]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
