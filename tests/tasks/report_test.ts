/**
 * @file `deno task report` / `compare` on bad and partial input: a directory that is not a run
 * exits 2 with a message naming it; a truncated metrics.jsonl is reported up to the torn line
 * and the report says what was skipped; compare overlays runs in one chart per metric and
 * marks the configuration keys that differ. (The browser test opens a real run's report.)
 */
import { strict as assert } from "node:assert";
import { main, readRunDir } from "../../tasks/report.ts";
import { findAll, parseXml } from "../_xml.ts";

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
