/**
 * Tests for the toolkit's image classifier (lib/nn/classifier.ts, lib/train/classifier.ts)
 * and the few-step image evaluation built on it (lib/train/shortcut.ts): against hand
 * computations in plain JS, a learnable synthetic task, and an independent recomputation
 * of FD and class agreement.
 */
import { strict as assert } from "node:assert";
import {
  buildCfmModel,
  classifierAccuracy,
  classifierFeatures,
  classifierPredict,
  classifierTrainer,
  createRun,
  crossEntropy,
  evaluateFewStepImages,
  featureStats,
  fit,
  frechetDistanceOf,
  Generator,
  loadClassifier,
  nn,
  randn,
  sampleCfmModel,
  saveCheckpoint,
  tensor,
} from "../../mod.ts";
import { assertClose } from "../_helpers.ts";

/** Plain-JS forward of an MLPClassifier: features (after the last hidden ReLU) and logits. */
async function byHand(m: nn.MLPClassifier, x: Float32Array) {
  const ps = await Promise.all(m.parameters().map((p) => p.data()));
  const shapes = m.parameters().map((p) => p.shape);
  const n = x.length / m.inputDim;
  const feats: number[][] = [], logits: number[][] = [];
  for (let r = 0; r < n; r++) {
    let h = Array.from(x.subarray(r * m.inputDim, (r + 1) * m.inputDim));
    for (let l = 0; l < ps.length / 2; l++) {
      const W = ps[2 * l]!, b = ps[2 * l + 1]!, [out, inp] = shapes[2 * l]! as [number, number];
      const z = Array.from({ length: out }, (_, o) => {
        let s = b[o]!;
        for (let i = 0; i < inp; i++) s += W[o * inp + i]! * h[i]!;
        return s;
      });
      const last = l === ps.length / 2 - 1;
      if (!last) h = z.map((v) => Math.max(v, 0));
      else {
        feats.push(h);
        logits.push(z);
      }
    }
  }
  return { feats, logits };
}

Deno.test("MLPClassifier: features and logits equal a plain-JS forward; [B, 1, H, W] inputs are flattened", async () => {
  const m = new nn.MLPClassifier({ inputDim: 12, hidden: [7, 5], numClasses: 3, seed: 2 });
  const x = await randn([4, 12], { seed: 3 }).data();
  const want = await byHand(m, x);
  const img = tensor(x, [4, 1, 3, 4]);
  assertClose(await m.features(img).data(), want.feats.flat(), { atol: 1e-5 });
  assertClose(await m.forward(img).data(), want.logits.flat(), { atol: 1e-5 });
  assertClose(await classifierFeatures(m, x, 3), want.feats.flat(), { atol: 1e-5 });
  const argmax = want.logits.map((l) => l.indexOf(Math.max(...l)));
  assert.deepEqual([...await classifierPredict(m, x, 3)], argmax);
  assert.throws(() => m.forward(randn([2, 11])), /12 values per row/);
});

Deno.test("crossEntropy equals −mean log softmax[label] computed by hand", async () => {
  const L = await randn([5, 4], { seed: 7 }).data(), y = [0, 3, 1, 1, 2];
  let want = 0;
  for (let r = 0; r < 5; r++) {
    const row = Array.from(L.subarray(r * 4, r * 4 + 4));
    const mx = Math.max(...row);
    const lse = mx + Math.log(row.reduce((a, v) => a + Math.exp(v - mx), 0));
    want += (lse - row[y[r]!]!) / 5;
  }
  const got = await crossEntropy(tensor(L, [5, 4]), tensor(y)).item();
  assertClose([got], [want], { atol: 1e-5 });
});

Deno.test("classifierAccuracy counts agreements overall and per class", async () => {
  const m = new nn.MLPClassifier({ inputDim: 6, hidden: [8], numClasses: 3, seed: 5 });
  const x = await randn([30, 6], { seed: 6 }).data();
  const p = await classifierPredict(m, x);
  // Labels: the prediction for even rows, (prediction + 1) mod 3 for odd rows.
  const labels = Float32Array.from(p, (k, i) => (i % 2 === 0 ? k : (k + 1) % 3));
  const r = await classifierAccuracy(m, x, labels);
  assert.equal(r.accuracy, 0.5);
  for (let c = 0; c < 3; c++) {
    const rows = [...labels.keys()].filter((i) => labels[i] === c);
    const hit = rows.filter((i) => p[i] === c).length;
    if (rows.length) assertClose([r.perClass[c]!], [hit / rows.length], { atol: 1e-12 });
  }
  await assert.rejects(classifierAccuracy(m, x, labels.subarray(1)), /one per image/);
  await assert.rejects(classifierAccuracy(m, x, labels.map(() => 3)), /labels in \[0, 2\]/);
});

Deno.test("classifierTrainer + fit learn 4 separable classes; loadClassifier restores the same predictions", async () => {
  // 4 classes in 16-D: class k is N(3·e_k, I). Held-out accuracy of a trained net ≫ 0.25.
  const make = async (n: number, seed: number) => {
    const z = await randn([n, 16], { seed }).data();
    const labels = Float32Array.from({ length: n }, (_, i) => i % 4);
    for (let i = 0; i < n; i++) z[i * 16 + labels[i]!]! += 3;
    return { images: z, labels, n };
  };
  const train = await make(800, 1), test = await make(400, 2);
  const cfg = {
    inputDim: 16,
    hidden: [32, 16],
    numClasses: 4,
    seed: 0,
    batchSize: 64,
    lr: 3e-3,
    weightDecay: 0,
  };
  const dir = await Deno.makeTempDir({ prefix: "clf-" });
  const tr = classifierTrainer(cfg, train);
  try {
    const run = await createRun("train:classifier", { outputDir: dir, expName: "c", config: cfg });
    await fit(tr, {
      run,
      maxSteps: 150,
      logEvery: 50,
      generator: new Generator(0),
      progress: false,
      config: { task: "train:classifier", ...cfg },
    });
    tr.model.eval();
    const acc = await classifierAccuracy(tr.model, test.images, test.labels);
    assert.ok(acc.accuracy > 0.9, `held-out accuracy ${acc.accuracy}`);
    const back = await loadClassifier(`${dir}/c`);
    assert.deepEqual(
      [...await classifierPredict(back.model, test.images)],
      [...await classifierPredict(tr.model, test.images)],
    );
    assert.equal(back.step, 150);
    back.model.dispose();
    // A checkpoint of another task is refused with the command that makes the right one.
    await saveCheckpoint(`${dir}/other.safetensors`, {
      model: { w: tensor([1]) },
      step: 0,
      config: { task: "train:cfm" },
    });
    await assert.rejects(loadClassifier(`${dir}/other.safetensors`), /not a train:classifier/);
  } finally {
    tr.model.dispose();
    tr.optimizer.dispose();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("evaluateFewStepImages: FD and class agreement equal an independent recomputation", async () => {
  const cfg = {
    model: "velocity-mlp" as const,
    hidden: 16,
    depth: 2,
    dataShape: [36],
    numClasses: 3,
    cfgDropout: 0,
    seed: 1,
    dtConditioning: true,
    denoiseTimesteps: 8,
  };
  const m = buildCfmModel(cfg).eval();
  const clf = new nn.MLPClassifier({ inputDim: 36, hidden: [12, 6], numClasses: 3, seed: 4 });
  const refX = await randn([300, 36], { seed: 8 }).data();
  const ref = await featureStats(clf, refX);
  const n = 60, labels = Float32Array.from({ length: n }, (_, i) => i % 3);
  const r = await evaluateFewStepImages(m, cfg, clf, ref, {
    n,
    seed: 5,
    steps: [1, 4],
    straightnessSamples: 10,
  });
  for (const N of [1, 4]) {
    const g = await sampleCfmModel(m, [36], {
      n,
      sampler: "euler",
      steps: N,
      seed: 5,
      labels,
      denoiseTimesteps: 8,
    });
    const fd = frechetDistanceOf(
      await classifierFeatures(clf, g.x),
      await classifierFeatures(clf, refX),
      6,
    );
    assertClose([r.fd[N]!], [fd], { rtol: 1e-9, atol: 1e-9 });
    const p = await classifierPredict(clf, g.x);
    assert.equal(r.classAcc[N], p.filter((k, i) => k === labels[i]).length / n);
  }
  assert.ok(Number.isFinite(r.straightness) && r.straightness >= 0);
  m.dispose();
  clf.dispose();
});
