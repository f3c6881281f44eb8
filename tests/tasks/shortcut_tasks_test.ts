/**
 * The shortcut tasks in shortened form: a short seeded run of `train:shortcut`,
 * `train:anchor` (labels and a cluster directory) and `train:local` beats its untrained
 * same-seed model on few-step W2 on the 8-Gaussians toy and logs the seed's metric names;
 * bad anchor/locality settings fail before anything is written.
 */
import { strict as assert } from "node:assert";
import {
  buildCfmModel,
  evaluateFewStep,
  getBackend,
  loadNpz,
  parseConfigFile,
  readMetrics,
  saveNpy,
  setBackend,
} from "../../mod.ts";
import { main as sampleMain } from "../../tasks/sample.ts";
import { main as tableMain } from "../../tasks/shortcut_table.ts";
import { main as clfMain } from "../../tasks/train_classifier.ts";
import { main as shortcutMain } from "../../tasks/train_shortcut.ts";
import { main as anchorMain, TRAIN_ANCHOR_FLAGS } from "../../tasks/train_anchor.ts";
import { main as localMain, TRAIN_LOCAL_FLAGS } from "../../tasks/train_local.ts";
import { parseTaskFlags, type ShortcutTaskConfig } from "../../tasks/_shortcut.ts";
import type { ShortcutRunResult } from "../../tasks/_shortcut_fit.ts";

// A small net, a large step size and a short EMA horizon, so 150 steps learn something.
const SHORT = [
  "--dataset=8gaussians",
  "--hidden=32",
  "--depth=2",
  "--batch-size=128",
  "--lr=1e-2",
  "--ema-decay=0.9",
  "--max-train-steps=150",
  "--log-every=50",
  "--eval-samples=200",
  "--seed=3",
];

async function onCpu<T>(fn: () => Promise<T>): Promise<T> {
  const prev = getBackend().name as "cpu" | "webgpu";
  setBackend("cpu");
  try {
    return await fn();
  } finally {
    setBackend(prev);
  }
}

/** Train, then compare the EMA model's few-step W2 with the untrained same-seed model's. */
async function beatsUntrained(
  main: (a: readonly string[]) => Promise<ShortcutRunResult | null>,
  extra: string[],
  metrics: string[],
  after?: (runDir: string, dir: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "shortcut-task-" });
  try {
    const r = await onCpu(() => main([...SHORT, ...extra, `--output-dir=${dir}`]));
    assert.ok(r && r.eval);
    const cfg = parseConfigFile(
      await Deno.readTextFile(`${r.runDir}/config.json`),
    ) as ShortcutTaskConfig;
    const fresh = buildCfmModel(cfg as ShortcutTaskConfig).eval();
    const base = await onCpu(() => evaluateFewStep(fresh, cfg, { n: 200 }));
    fresh.dispose();
    for (const N of [1, 2, 4, 8]) {
      assert.ok(
        r.eval.w2[N]! < 0.8 * base.w2[N]!,
        `${cfg.task} N=${N}: trained W2 ${r.eval.w2[N]} vs untrained ${base.w2[N]}`,
      );
    }
    const rec = await readMetrics(`${r.runDir}/metrics.jsonl`);
    const train = rec.find((m) => m.step === 150 && "training/loss" in m)!;
    for (const k of ["training/loss_flow", "training/loss_bootstrap", "training/grad_norm"]) {
      assert.ok(Number.isFinite(train[k]), k);
    }
    for (const k of metrics) assert.ok(Number.isFinite(train[k]), `${k} in ${Object.keys(train)}`);
    assert.ok(rec.some((m) => "eval/w2_1step" in m && "eval/straightness" in m));
    await Deno.stat(`${r.runDir}/samples/step-000150.png`);
    await after?.(r.runDir, dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("train:shortcut beats the untrained model at 1, 2, 4, 8 steps; sample --num-steps N", async () => {
  await beatsUntrained(shortcutMain, [], ["training/v_magnitude_prime"], async (run, dir) => {
    const out = `${dir}/x.npz`;
    const r = await onCpu(() =>
      sampleMain([`--checkpoint=${run}`, "--num-steps=4", `--out=${out}`])
    );
    assert.equal(r!.nfe, 4);
    const { x } = await loadNpz(out);
    assert.deepEqual(x!.shape, [1000, 2]);
    await assert.rejects(
      sampleMain([`--checkpoint=${run}`, "--num-steps=6", `--out=${out}`]),
      /--num-steps.*power of two.*found 6/,
    );
    await assert.rejects(
      sampleMain([`--checkpoint=${run}`, "--sampler=heun", "--num-steps=4", `--out=${out}`]),
      /--sampler euler/,
    );
  });
});

Deno.test("train:anchor (label anchors) beats the untrained model at 1, 2, 4, 8 steps", async () => {
  await beatsUntrained(anchorMain, [], ["training/loss_anchor", "training/anchor_valid_ratio"]);
});

Deno.test("train:local beats the untrained model at 1, 2, 4, 8 steps", async () => {
  await beatsUntrained(localMain, ["--model.locality_noise_scale=0.1"], [
    "training/loss_locality",
    "training/locality_target_diff",
    "training/v_magnitude_prime",
  ]);
});

/** A cluster directory for the 8 Gaussians: the 8 centres, `n` latents, assignments. */
async function clusterDir(dir: string, n = 40, d = 2): Promise<void> {
  const s = Math.SQRT1_2;
  const c = [[1, 0], [-1, 0], [0, 1], [0, -1], [s, s], [s, -s], [-s, s], [-s, -s]];
  const centers = Float32Array.from(c.flat().map((v) => 5 * v));
  await saveNpy(`${dir}/cluster_centers.npy`, { shape: [8, d], data: centers.slice(0, 8 * d) });
  const lat = Float32Array.from({ length: n * d }, (_, i) => centers[i % 16]!);
  await saveNpy(`${dir}/latents.npy`, { shape: [n, d], data: lat });
  const rows = Array.from({ length: n }, (_, i) => `${i},${i % 8}`);
  await Deno.writeTextFile(`${dir}/assignments.csv`, ["index,cluster", ...rows].join("\n"));
}

Deno.test("train:anchor with --cluster-dir: nearest-centroid anchors and cluster metrics", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shortcut-cluster-" });
  try {
    await clusterDir(dir);
    await beatsUntrained(anchorMain, [
      `--cluster_dir=${dir}`,
      "--model.use_cluster_centroids=True",
      "--model.use_label_anchors=False",
      "--model.num_clusters=8",
    ], [
      "training/loss_anchor",
      "training/anchor_valid_ratio",
      "training/cluster_distances",
      "training/unique_clusters_used",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bad anchor and locality settings fail before anything is written", async () => {
  const out = await Deno.makeTempDir({ prefix: "shortcut-bad-" });
  const cd = await Deno.makeTempDir({ prefix: "shortcut-bad-cd-" });
  try {
    const o = `--output-dir=${out}`;
    const a = (...x: string[]) => anchorMain([o, ...x]);
    await assert.rejects(a("--use-cluster-centroids"), /needs --cluster-dir/);
    await assert.rejects(a(`--cluster-dir=${cd}`), /lacks cluster_centers.npy, latents.npy/);
    await assert.rejects(a(`--cluster-dir=${cd}/none`), /does not exist/);
    await clusterDir(cd, 5);
    await assert.rejects(
      a(`--cluster-dir=${cd}`, "--num-clusters=8"),
      /at most the number of samples 5/,
    );
    await clusterDir(cd, 40);
    await assert.rejects(a(`--cluster-dir=${cd}`, "--num-clusters=10"), /10 clusters.*holds 8/);
    await assert.rejects(
      a(`--cluster-dir=${cd}`, "--dataset=fashion-mnist"),
      /row size 784.*\[8, 2\]/,
    );
    await saveNpy(`${cd}/latents.npy`, { shape: [40, 3], data: new Float32Array(120) });
    await assert.rejects(a(`--cluster-dir=${cd}`), /shape \[N, 2\].*\[40,3\]/);
    await assert.rejects(a("--model.anchor_weight=-1"), /--anchor-weight.*-1/);
    await assert.rejects(a("--dataset=moons"), /needs class labels but --dataset moons/);
    const l = (...x: string[]) => localMain([o, ...x]);
    await assert.rejects(l("--model.locality_noise_scale=-0.1"), /--locality-noise-scale.*-0.1/);
    await assert.rejects(l("--model.locality_weight=-2"), /--locality-weight.*-2/);
    assert.deepEqual([...Deno.readDirSync(out)], []);
  } finally {
    await Deno.remove(out, { recursive: true });
    await Deno.remove(cd, { recursive: true });
  }
});

Deno.test("train:anchor exits with status 2 and a one-line message on bad input", async () => {
  const p = await new Deno.Command("deno", {
    args: ["run", "--allow-read=.,/tmp", "tasks/train_anchor.ts", "--use-cluster-centroids"],
    env: { FLOWGPU_BACKEND: "cpu" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(p.code, 2);
  const err = new TextDecoder().decode(p.stderr).trim();
  assert.match(err, /^train:anchor: --use-cluster-centroids needs --cluster-dir/m);
});

Deno.test("shortcut:table trains the variants, aggregates over seeds and re-renders", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shortcut-table-" });
  try {
    const args = [
      "--seeds=0",
      "--variants=shortcut,anchor-clusters",
      "--max-train-steps=10",
      "--eval-samples=50",
      "--hidden=8",
      "--depth=1",
      "--batch-size=32",
      "--cluster-samples=100",
      "--num-clusters=4",
      `--output-dir=${dir}`,
      `--out=${dir}/t.md`,
    ];
    const rows = await onCpu(() => tableMain(args));
    assert.deepEqual(rows!.map((r) => r.variant), ["shortcut", "anchor-clusters", "untrained"]);
    const md = await Deno.readTextFile(`${dir}/t.md`);
    assert.match(md, /\| anchor-clusters \| 1 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \|/);
    assert.match(md, /--cluster-dir=.*clusters-seed0 --model.use_cluster_centroids=True/);
    const again = await onCpu(() => tableMain([...args, "--render-only"]));
    assert.equal(again!.length, 3);
    const lines = (await Deno.readTextFile(`${dir}/results.jsonl`)).trim().split("\n");
    assert.equal(lines.length, 3);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the seed's README command lines parse with SC's defaults", () => {
  const anchor = parseTaskFlags(
    "--dataset_name fashion-mnist --batch_size 128 --save_dir ./checkpoints/anchor_clustered --cluster_dir ./cluster_results --model.use_cluster_centroids=True --model.use_label_anchors=False --model.anchor_weight=1.0 --model.num_clusters=100"
      .split(" "),
    TRAIN_ANCHOR_FLAGS,
    "train:anchor",
    "",
  )!;
  assert.equal(anchor.f.dataset, "fashion-mnist");
  assert.equal(anchor.f.batchSize, 128);
  assert.equal(anchor.f.outputDir, "./checkpoints/anchor_clustered");
  assert.equal(anchor.f.clusterDir, "./cluster_results");
  assert.equal(anchor.f.useClusterCentroids, true);
  assert.equal(anchor.f.useLabelAnchors, false);
  assert.equal(anchor.f.anchorWeight, 1);
  assert.ok(anchor.given.has("numClusters"));
  const local = parseTaskFlags(
    "--model.locality_noise_scale=0.1 --model.locality_weight=1.0 --model.bootstrap_every=8 --model.bootstrap_cfg=0 --model.bootstrap_ema=1 --model.cfg_scale=4.0"
      .split(" "),
    TRAIN_LOCAL_FLAGS,
    "train:local",
    "",
  )!.f;
  assert.deepEqual(
    [local.localityNoiseScale, local.localityWeight, local.bootstrapEvery, local.bootstrapCfg],
    [0.1, 1, 8, false],
  );
  assert.equal(local.bootstrapEma, true);
  const d = parseTaskFlags([], TRAIN_ANCHOR_FLAGS, "train:anchor", "")!.f;
  assert.deepEqual(
    [d.lr, d.weightDecay, d.emaDecay, d.cfgScale, d.numClusters, d.useLabelAnchors],
    [1e-4, 0.1, 0.999, 4, 100, true],
  );
});

Deno.test("fashion-mnist with --model velocity-mlp: train:classifier beats chance on the test split, shortcut:table writes FD rows, sample writes a 28×28 grid", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shortcut-fmnist-" });
  try {
    // The classifier, briefly: 60 steps on 3000 images already sit far above chance (0.1).
    const clf = await clfMain([
      "--max-train-steps=60",
      "--train-limit=3000",
      `--output-dir=${dir}`,
      "--exp-name=clf",
      "--log-every=60",
    ]);
    assert.ok(clf!.testAccuracy > 0.6, `test accuracy ${clf!.testAccuracy}`);
    const evalJson = JSON.parse(await Deno.readTextFile(`${dir}/clf/eval.json`));
    assert.equal(evalJson.testAccuracy, clf!.testAccuracy);
    const args = [
      "--dataset=fashion-mnist",
      "--seeds=0",
      "--variants=shortcut",
      "--max-train-steps=4",
      "--eval-samples=100",
      "--hidden=16",
      "--depth=1",
      "--batch-size=16",
      `--classifier=${dir}/clf`,
      `--output-dir=${dir}/t`,
      `--out=${dir}/t.md`,
    ];
    const rows = await tableMain(args);
    assert.deepEqual(rows!.map((r) => r.variant), ["shortcut", "untrained"]);
    for (const r of rows!) {
      for (const N of [1, 2, 4, 8]) {
        assert.ok(r.fd![N]! > 0 && r.classAcc![N]! >= 0 && r.classAcc![N]! <= 1);
      }
    }
    const md = await Deno.readTextFile(`${dir}/t.md`);
    assert.match(md, /not the Inception\s+FID/);
    assert.match(md, /\| shortcut \| 1 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \|/);
    assert.match(md, /deno task train:shortcut --dataset=fashion-mnist --model=velocity-mlp/);
    const json = JSON.parse(await Deno.readTextFile(`${dir}/t.json`));
    assert.equal(json.classifierTestAccuracy, clf!.testAccuracy);
    // The flat model's checkpoint samples as 28×28 images.
    const run = `${dir}/t/runs/shortcut-seed0`;
    const cfg = parseConfigFile(
      await Deno.readTextFile(`${run}/config.json`),
    ) as ShortcutTaskConfig;
    assert.deepEqual([cfg.model, cfg.dataShape, cfg.numClasses], ["velocity-mlp", [784], 10]);
    const s = await sampleMain([
      `--checkpoint=${run}`,
      "--num-steps=2",
      "--class-grid",
      "--samples-per-class=2",
      `--out=${dir}/g.npz`,
    ]);
    assert.equal(s!.n, 20);
    const { arr_0 } = await loadNpz(`${dir}/g.npz`);
    assert.deepEqual(arr_0!.shape, [20, 28, 28, 3]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
