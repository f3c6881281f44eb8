/**
 * `deno task results`: README blocks come from the tables' JSON with mean ± std computed
 * independently here; the committed README's blocks equal what the committed docs/*.json
 * render to (so the README cannot drift from the command's output).
 */
import { strict as assert } from "node:assert";
import { main, readmeBlock, type TableName, TABLES } from "../../tasks/results.ts";

const gmmRow = (exp: string, seed: number, v: number) => ({
  exp,
  seed,
  steps: 10,
  fisher: { "0.5": v, "0.6": 2 * v },
  curve: [],
  seconds: 1,
  command: "deno task gmm",
  commit: "abc1234",
});

const cfmRow = (ot: string, seed: number, w: number) => ({
  dataset: "moons",
  ot,
  steps: 10,
  seed,
  numSamples: 10,
  trainSeconds: 1,
  evalSeconds: 1,
  finalLoss: 1,
  euler: [{ steps: 1, w2: w, kl: 0 }, { steps: 100, w2: w / 4, kl: 0 }],
  dopri5: { nfe: 20 + seed, w2: 0, kl: 0 },
  straightness: w / 10,
  lengthRatio: 1,
  trainCommand: "",
  evalCommands: [],
  backend: "cpu",
  adapter: "",
  commit: "abc1234",
});

Deno.test("results --quick --render-only: README blocks carry mean ± std over the seeds", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flowgpu-results-" });
  try {
    // gmm: CFM 1, 2, 3 → mean 2, std 1; StableVM lower by 0.5 at every seed (paired).
    const gmm = [1, 2, 3].flatMap((v, s) => [gmmRow("cfm", s, v), gmmRow("stable_vm", s, v - 0.5)]);
    await Deno.writeTextFile(`${dir}/gmm_results.json`, JSON.stringify({ rows: gmm }));
    const cfm = [2, 4, 6].map((w, s) => cfmRow("none", s, w));
    await Deno.writeTextFile(
      `${dir}/cfm_results.json`,
      JSON.stringify({ rows: cfm, pairing: { "moons/none": 1 } }),
    );
    const sc = [0, 1, 2].map((seed) => ({
      variant: "shortcut",
      seed,
      w2: { 1: seed, 2: 1, 4: 1, 8: 1 },
      straightness: 0.5,
      commit: "abc1234",
    }));
    await Deno.writeTextFile(`${dir}/shortcut_results.json`, JSON.stringify({ rows: sc }));
    // images: CFM FD 30, 40, 50 → 40 ± 10; class agreement 0.7 at every seed.
    const img = [30, 40, 50].map((fd, seed) => ({
      variant: "cfm",
      seed,
      steps: 10,
      batchSize: 8,
      learningRate: 3e-4,
      hidden: 16,
      blocks: 1,
      evalSamples: 20,
      evalSteps: 2,
      cfgScale: 3,
      fd,
      fdRealTrainTest: 5,
      classAcc: 0.7,
      classAccPerClass: [],
      seconds: 60,
      stepMs: 10,
      resumed: false,
      backend: "wasm",
      ...(seed === 0 ? { grid: "docs/img/images_table_cfm_seed0.png" } : {}),
      command: "",
      commit: "abc1234",
    }));
    await Deno.writeTextFile(`${dir}/images_table.json`, JSON.stringify({ rows: img }));
    const idx = await main([
      "--quick",
      "--render-only",
      "--only",
      "gmm,cfm,shortcut,images",
      "--out-dir",
      dir,
    ]);
    assert.ok(idx);
    const md = await Deno.readTextFile(`${dir}/README.blocks.md`);
    const flat = md.replace(/\s+/g, " "); // deno fmt pads cells and wraps prose
    // gmm: t = 0.5 column 2.000 ± 1.000, t = 0.6 column 4.000 ± 2.000, mean over t 3 ± 1.5.
    assert.match(
      flat,
      /\| CFM \(`--exp cfm`\) \| 3 \| 2\.000 ± 1\.000 \| 4\.000 ± 2\.000 \| 3\.000 ± 1\.500 \|/,
    );
    // Paired differences −0.75 at every seed (mean over t of v − 0.5 and 2v − 1): lower.
    assert.match(flat, /-0\.750, -0\.750, -0\.750 \(mean -0\.750 ± 0\.000\) — lower than CFM/);
    // cfm: W2 Euler 1 over 2, 4, 6 → 4 ± 2; Euler 100 → 1 ± 0.5; NFE 20, 21, 22 → 21.0 ± 1.0.
    assert.match(
      flat,
      /\| moons \| none \| 3 \| 4\.000 ± 2\.000 \| 1\.000 ± 0\.500 \| 21\.0 ± 1\.0 \|/,
    );
    // shortcut: W2 @ 1 over 0, 1, 2 → 1 ± 1.
    assert.match(flat, /\| shortcut \| 3 \| 1\.000 ± 1\.000 \| 1\.000 ± 0\.000 \|/);
    assert.match(
      flat,
      /\| CFM \(`--loss-type si`\) \| 3 \| 40\.00 ± 10\.00 \| 5\.00 \| 0\.700 ± 0\.000 \|/,
    );
    assert.match(flat, /!\[CFM class grid, seed 0\]\(docs\/img\/images_table_cfm_seed0\.png\)/);
    for (const t of ["gmm", "cfm", "shortcut", "images"]) {
      assert.match(md, new RegExp(`<!-- results:${t} -->[^]*<!-- /results:${t} -->`));
    }
    assert.match(flat, /rows from commit\(s\) abc1234/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("results: a README without a table's markers is an error naming them", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flowgpu-results-" });
  try {
    await Deno.writeTextFile(`${dir}/README.md`, "# no markers\n");
    await assert.rejects(
      () => main(["--render-only", "--only", "gmm", "--readme", `${dir}/README.md`]),
      /<!-- results:gmm -->/,
    );
    assert.equal(await Deno.readTextFile(`${dir}/README.md`), "# no markers\n"); // untouched
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("results: the committed README's tables are what docs/*.json render to", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  // deno fmt pads table cells and widens the --- rules: compare without either.
  const norm = (s: string) => s.replace(/\s+/g, "").replace(/-{3,}/g, "---");
  // Every table the README shows (at least these) matches its JSON.
  const shown = TABLES.filter((t) => readme.includes(`<!-- results:${t} -->`));
  for (const t of ["gmm", "cfm", "shortcut", "shortcut-fmnist", "images", "images-preset"]) {
    assert.ok(shown.includes(t as TableName), t);
  }
  for (const t of shown) {
    const m = readme.match(
      new RegExp(`<!-- results:${t} -->([^]*?)<!-- /results:${t} -->`),
    );
    assert.ok(m, `README has the ${t} block`);
    // The path as `deno task results` writes it (the tests run from the repository root).
    const md = {
      "shortcut-fmnist": "shortcut_results_fmnist",
      flowmap: "flowmap_table",
      images: "images_table",
      "images-preset": "images_preset",
    }[t as string] ?? `${t}_results`;
    assert.equal(norm(m[1]!), norm(await readmeBlock(t, `docs/${md}.md`)), t);
  }
});
