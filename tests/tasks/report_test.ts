/**
 * @file `deno task report` / `compare` on bad and partial input: a directory that is not a run
 * exits 2 with a message naming it; a truncated metrics.jsonl is reported up to the torn line
 * and the report says what was skipped; compare overlays runs in one chart per metric and
 * marks the configuration keys that differ. A resumed run's progress counts from the resumed
 * step at this session's rate; env.json records the environment and the report shows it; the
 * Fashion-MNIST trainer's labelled, upscaled sample grid is what the report shows. (The browser
 * test opens a real run's report.)
 */
import { strict as assert } from "node:assert";
import { main, readRunDir } from "../../tasks/report.ts";
import { findAll, parseXml, textOf } from "../_xml.ts";

const ROOT = new URL("../../", import.meta.url);

async function makeRun(dir: string, lr: number, lines: string): Promise<string> {
  await Deno.mkdir(`${dir}/samples`, { recursive: true });
  await Deno.mkdir(`${dir}/checkpoints`, { recursive: true });
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ task: "train:cfm", lr }));
  await Deno.writeTextFile(`${dir}/metrics.jsonl`, lines);
  // A 1×1 PNG from the library's encoder stands in for a sample grid.
  const { encodePng } = await import("../../mod.ts");
  await Deno.writeFile(`${dir}/samples/step-000002.png`, await encodePng(1, 1, new Uint8Array(4)));
  await Deno.writeFile(`${dir}/checkpoints/step-000002.safetensors`, new Uint8Array(16));
  return dir;
}

/** The chart SVGs of a report, decoded from their data URLs and parsed. */
function chartsOf(html: string) {
  return [
    ...html.matchAll(
      /data-metric="([^"]+)"><img class="chart"[^>]*src="data:image\/svg\+xml;base64,([^"]+)"/g,
    ),
  ]
    .map((m) => ({
      metric: m[1]!,
      svg: parseXml(new TextDecoder().decode(Uint8Array.from(atob(m[2]!), (c) => c.charCodeAt(0)))),
    }));
}

Deno.test("report: a directory that is not a run exits 2 and says why", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const out = await new Deno.Command("deno", {
      args: ["task", "--quiet", "report", dir],
      cwd: ROOT.pathname,
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    assert.equal(out.code, 2);
    const err = new TextDecoder().decode(out.stderr);
    assert.match(err, /is not a run directory: it has neither config\.json nor metrics\.jsonl/);
    assert.ok(err.includes(dir), err);
    assert.equal(await main([`${dir}/missing`], false), 2);
    await Deno.writeTextFile(`${dir}/file.txt`, "x");
    assert.equal(await main([`${dir}/file.txt`], false), 2);
    assert.equal(await main([], false), 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("report: a truncated metrics.jsonl is reported up to the torn line, which is named", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const run = await makeRun(
      `${dir}/run`,
      0.01,
      '{"step":1,"training/loss_flow":2,"training/grad_norm":3}\n' +
        '{"step":2,"training/loss_flow":1.5,"training/grad_norm":2}\n{"step":3,"training/lo',
    );
    const r = await readRunDir(run);
    assert.equal(r.records.length, 2);
    assert.equal(r.skipped.length, 1);
    assert.equal(await main([run], false), 0);
    const html = await Deno.readTextFile(`${run}/report.html`);
    assert.match(html, /Some input was skipped/);
    assert.match(html, /metrics\.jsonl: line 3 is incomplete \(torn last line/);
    const charts = chartsOf(html);
    assert.deepEqual(charts.map((c) => c.metric), ["training/loss_flow", "training/grad_norm"]);
    for (const c of charts) {
      const [line] = findAll(c.svg, (e) => e.attrs["aria-roledescription"] === "line mark");
      assert.equal(line!.attrs.d!.split(/[ML]/).filter(Boolean).length, 2, c.metric);
    }
    assert.ok(html.includes("samples/step-000002.png") && html.includes("(checkpoint)"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("compare: one chart per metric with a line per run; differing config keys marked", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const a = await makeRun(`${dir}/lr-small`, 0.001, '{"step":1,"loss":2}\n{"step":2,"loss":1}\n');
    const b = await makeRun(`${dir}/lr-large`, 0.1, '{"step":1,"loss":3}\n{"step":2,"loss":0.5}\n');
    const out = `${dir}/cmp.html`;
    assert.equal(await main([a, b, "--out", out], true), 0);
    const html = await Deno.readTextFile(out);
    assert.match(html, /Comparison of 2 runs/);
    const [chart] = chartsOf(html);
    const lines = findAll(chart!.svg, (e) => e.attrs["aria-roledescription"] === "line mark");
    assert.deepEqual(
      lines.map((l) => /Run: ([\w-]+)/.exec(l.attrs["aria-label"]!)?.[1]).sort(),
      ["lr-large", "lr-small"],
    );
    assert.match(html, /<tr class="differs"><td>lr<\/td><td>0\.001<\/td><td>0\.1<\/td><\/tr>/);
    assert.doesNotMatch(html, /<tr class="differs"><td>task</);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const run = (...args: string[]) =>
  new Deno.Command("deno", {
    args: ["task", "--quiet", ...args],
    cwd: ROOT.pathname,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();

Deno.test("a resumed train:cfm run: progress counts from the resumed step at this session's rate; env.json and the report record the environment", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const common = ["--batch-size", "32", "--hidden", "16", "--log-every", "5"];
    const first = await run(
      "train:cfm",
      ...common,
      ...["--max-train-steps", "20", "--checkpoint-every", "20", "--sample-every", "0"],
      ...["--output-dir", dir, "--exp-name", "r"],
    );
    assert.ok(first.success, new TextDecoder().decode(first.stderr));
    const env0 = JSON.parse(await Deno.readTextFile(`${dir}/r/env.json`));
    assert.equal(env0.deno, Deno.version.deno);
    assert.equal(env0.os, `${Deno.build.os} ${Deno.build.arch}`);
    assert.ok(["webgpu", "wasm", "cpu"].includes(env0.backend), env0.backend);
    assert.ok(env0.adapter.startsWith(env0.backend), env0.adapter);
    assert.ok(env0.commit === null || /^[0-9a-f]{40}$/.test(env0.commit), env0.commit);

    const second = await run("train:cfm", "--resume", `${dir}/r`, "--max-train-steps", "40");
    const err = new TextDecoder().decode(second.stderr);
    assert.ok(second.success, err);
    const lines = err.split("\n").filter((l) => l.startsWith("train:cfm "));
    // The first line comes before any step and names the resumed step.
    assert.match(lines[0]!, /^train:cfm start 20\/40 \(resumed; 20 to go\)/, err);
    const counts = lines.map((l) => /^train:cfm step (\d+)\/40/.exec(l)?.[1]).filter(Boolean)
      .map(Number);
    assert.ok(counts.length > 0 && counts.every((s) => s > 20 && s <= 40), `counts ${counts}`);
    const done = /^train:cfm done 40\/40 steps \(20 this session\) in ([\d.]+)s \(([\d.]+) it\/s\)/
      .exec(lines[lines.length - 1]!);
    assert.ok(done, err);
    // The rate is this session's 20 steps over its time, not 40 over it (which would double).
    const [secs, rate] = [Number(done[1]), Number(done[2])];
    // The time is printed to 0.1 s, so 20 steps over it span 20 / (secs ± 0.05); 40 steps (a
    // rate counted from step 0) would be twice that and fall outside.
    const lo = 20 / (secs + 0.05), hi = secs > 0.05 ? 20 / (secs - 0.05) : Infinity;
    assert.ok(rate >= 0.97 * lo - 0.1 && rate <= 1.03 * hi + 0.1, `${rate} it/s vs 20 / ${secs}s`);
    assert.ok(secs >= 0.2 ? rate < 1.5 * (20 / secs) : true, `${rate} it/s is not 40 / ${secs}s`);

    const env = JSON.parse(await Deno.readTextFile(`${dir}/r/env.json`));
    assert.equal(env.resumes.length, 1);
    assert.equal(env.resumes[0].deno, Deno.version.deno);
    assert.equal(await main([`${dir}/r`], false), 0);
    const html = await Deno.readTextFile(`${dir}/r/report.html`);
    const envTable = html.slice(html.indexOf('id="environment"'), html.indexOf('id="config"'));
    for (const v of [env0.adapter, env0.deno, env0.os]) {
      assert.ok(envTable.includes(v), `environment table shows ${v}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz";
const hasFashion = await Deno.stat(FASHION).then(() => true, () => false);
if (!hasFashion) {
  console.log(
    `labelled-grid test ignored: ${FASHION} missing (apt-get install dataset-fashion-mnist)`,
  );
}

Deno.test({
  name:
    "train:stablevm on Fashion-MNIST writes an upscaled sample grid with class names on the rows, which the report shows",
  ignore: !hasFashion,
}, async () => {
  const dir = await Deno.makeTempDir();
  try {
    const out = await run(
      "train:stablevm",
      ...["--data-dir", "fashion-mnist", "--max-train-steps", "4", "--log-every", "2"],
      ...["--batch-size", "16", "--bank-capacity-per-class", "4", "--output-dir", dir],
      ...["--exp-name", "f"],
    );
    const err = new TextDecoder().decode(out.stderr);
    assert.ok(out.success, err);
    assert.match(err, /^train:stablevm: loading fashion-mnist…$/m);
    assert.match(err, /^train:stablevm: loading fashion-mnist done in [\d.]+s$/m);
    const svg = parseXml(await Deno.readTextFile(`${dir}/f/samples/samples-step-000004.svg`));
    const { FASHION_MNIST_CLASSES } = await import("../../mod.ts");
    const texts = findAll(svg, (e) => e.name === "text").map((e) => textOf(e));
    assert.deepEqual(texts.slice(1), [...FASHION_MNIST_CLASSES]);
    const [image] = findAll(svg, (e) => e.name === "image");
    // 8 columns of 28 pixels with 1-pixel padding, upscaled 3×: (8·28 + 9)·3 = 699.
    assert.equal(Number(image!.attrs.width), 699);
    assert.equal(Number(image!.attrs.height), (10 * 28 + 11) * 3);
    assert.equal(await main([`${dir}/f`], false), 0);
    const html = await Deno.readTextFile(`${dir}/f/report.html`);
    assert.ok(html.includes("samples/samples-step-000004.svg"), "the labelled grid is shown");
    assert.ok(!html.includes('alt="f: samples/samples-step-000004.png"'), "not its raw twin");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
