/**
 * @file What `train:stablevm` does after training, with the EMA weights: on vectors, the
 * sample scatter and (embedded mixture) the Fisher divergence against the exact field; on
 * image rows, the class grid sampled with classifier-free guidance (`--cfg-scale`, one row per
 * class) and, on Fashion-MNIST, the scores of `--eval-samples` guided samples with the
 * classifier (`--classifier`): FD on its penultimate features against the test split, the
 * real-train-vs-test floor, and class agreement overall and per class; and the line the task
 * prints.
 * @module
 */
import {
  encodePng,
  evaluateImageField,
  fisherDivergence,
  generateSamples,
  Generator,
  type ImageFieldScores,
  integrate,
  type LabelledSet,
  type LoadedClassifier,
  Progress,
  type SampleContext,
  stableVmField,
  type StableVmNet,
  tensor,
} from "../mod.ts";
import { imageGrid, labelledGridSvg, scatterPanels } from "../viz/mod.ts";
import { figureShape, imageShape, type StableVmImageConfig } from "./_stablevm_images.ts";

/** The figure and numbers of the end of a run. */
export interface FinalFigures {
  /** The sample scatter or class grid (PNG). */
  plot: string;
  /** Mean Fisher divergence against the exact field (the embedded mixture; else null). */
  fisher: number | null;
  /** FD, floor and class agreement of the guided samples (null when not scored). */
  scores: (ImageFieldScores & { classifier: string }) | null;
}

/** What the figures need of the run's config. */
type FigureConfig = StableVmImageConfig & {
  seed: number;
  sampleSteps: number;
  lossType: string;
  fisherSamples: number;
};

/** The figures and numbers for the data at hand (images or vectors). */
export function finalFigures(
  ctx: SampleContext<StableVmNet>,
  c: FigureConfig,
  data: LabelledSet,
  clf: LoadedClassifier | null,
): Promise<FinalFigures> {
  return figureShape(data) ? imageFigures(ctx, c, data, clf) : vectorFigures(ctx, c, data);
}

/**
 * The line the task prints about its final numbers.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { finalReport } from "./_stablevm_final.ts";
 * assert.match(finalReport({ plot: "p", fisher: 0.5, scores: null }), /fisher divergence .*: 0\.5000/);
 * ```
 */
export function finalReport(out: FinalFigures): string {
  const e = out.scores;
  if (e) {
    const pct = (a: number) => (100 * a).toFixed(1);
    return `eval (${e.numSamples} samples, midpoint ${e.steps} steps, CFG ${e.cfgScale}, ` +
      `classifier ${e.classifier}): FD ${e.fd.toFixed(2)} (real train vs test ` +
      `${e.fdRealTrainTest.toFixed(2)}; FD on its features, not FID), class agreement ` +
      `${pct(e.classAcc)}% (per class ${e.classAccPerClass.map(pct).join(", ")})`;
  }
  return out.fisher === null
    ? "fisher divergence: n/a (no exact field for --data-dir data); FD and class agreement: " +
      "--data-dir fashion-mnist with --eval-samples > 0"
    : "fisher divergence (EMA model vs exact class-conditional velocity, t = 0.5…0.8): " +
      out.fisher.toFixed(4);
}

/** Vectors: the sample scatter beside the data, and the Fisher divergence when exact. */
async function vectorFigures(
  ctx: SampleContext<StableVmNet>,
  c: FigureConfig,
  data: LabelledSet,
): Promise<FinalFigures> {
  const C = data.numClasses, d = data.dim, model = ctx.model, nS = 1024;
  const labels = Float32Array.from({ length: nS }, (_, i) => i % C);
  const y = tensor(labels);
  const x0 = new Generator(c.seed + 4242).normal([nS, d]);
  const res = await integrate(stableVmField(model), x0, {
    method: "midpoint",
    steps: c.sampleSteps,
    cond: y,
  });
  const xs = await res.x.data();
  [res.x, x0, y].forEach((t) => t.dispose());
  const step6 = String(ctx.step).padStart(6, "0");
  const two = (a: Float32Array) =>
    d === 2
      ? a
      : Float32Array.from({ length: (a.length / d) * 2 }, (_, i) =>
        a[Math.floor(i / 2) * d + (i % 2)]!);
  const dataIdx = Array.from({ length: nS }, (_, i) => Math.floor((i * data.n) / nS));
  const dataPts = new Float32Array(nS * d);
  dataIdx.forEach((j, i) => dataPts.set(data.x.subarray(j * d, (j + 1) * d), i * d));
  const png = await scatterPanels([
    { points: two(dataPts), labels: dataIdx.map((j) => data.labels[j]!), title: "data" },
    { points: two(xs), labels, title: `samples (${c.lossType}, step ${ctx.step})` },
  ]);
  const plot = await ctx.run.writeFile(`samples/samples-step-${step6}.png`, png);
  if (!data.gmm) return { plot, fisher: null, scores: null };
  const fd = await fisherDivergence(stableVmField(model), data.gmm, {
    generator: new Generator(c.seed + 99),
    n: c.fisherSamples,
    conditional: true,
  });
  const fisher = fd.reduce((a, p) => a + p.value, 0) / fd.length;
  await ctx.log({
    "eval/fisher_divergence": fisher,
    ...Object.fromEntries(fd.map((p) => [`eval/fisher_t${p.t}`, p.value])),
  });
  return { plot, fisher, scores: null };
}

/**
 * After training, with the EMA weights: the class grid (8 samples of each of up to 10
 * classes, guided when the data have ≥ 2 classes) as `samples/samples-step-N.png` and a
 * labelled `.svg`, then, with a classifier, the scores, logged as `eval/fd`,
 * `eval/fd_real_train_test`, `eval/class_acc`, `eval/class_acc_<k>` and written to
 * `eval_images.json`.
 */
async function imageFigures(
  ctx: SampleContext<StableVmNet>,
  c: FigureConfig,
  data: LabelledSet,
  clf: LoadedClassifier | null,
): Promise<FinalFigures> {
  const img = figureShape(data)!, C = data.numClasses;
  // The field is in our time (t = 0 noise, t = 1 data), as the unguided grid always was; CFG
  // wraps that same field, v_u + s·(v_c − v_u) with the null label C (the 10% the loss
  // drops), over the whole of [0, 1], so no guidance interval needs converting. On codes
  // (--latents) the model is an MLP on flat rows, and the samples are decoded to images.
  const field = stableVmField(ctx.model, imageShape(data) ?? undefined);
  const decoded = data.decoded;
  const cfg = C >= 2 ? c.cfgScale : 1;
  const rows = Math.min(C, 10), per = 8, nS = rows * per;
  const g = await generateSamples(field, [data.dim], {
    n: nS,
    sampler: "midpoint",
    steps: c.sampleSteps,
    seed: c.seed + 4242,
    nullLabel: C,
    labels: Float32Array.from({ length: nS }, (_, i) => Math.floor(i / per)),
    cfgScale: cfg,
  });
  const pics = decoded ? await decoded.decode(g.x) : g.x;
  const step6 = String(ctx.step).padStart(6, "0");
  const names = data.classNames ?? Array.from({ length: C }, (_, k) => `class ${k}`);
  await ctx.run.writeFile(
    `samples/samples-step-${step6}.svg`,
    await labelledGridSvg(pics, img, {
      cols: per,
      rowLabels: names.slice(0, rows),
      title: `Samples at step ${ctx.step} (${c.lossType}, EMA${cfg !== 1 ? `, CFG ${cfg}` : ""})`,
    }),
  );
  const grid = imageGrid(pics, {
    n: nS,
    channels: img[0],
    height: img[1],
    width: img[2],
    nrow: per,
  });
  const plot = await ctx.run.writeFile(
    `samples/samples-step-${step6}.png`,
    await encodePng(grid.width, grid.height, grid.rgba),
  );
  if (!clf) return { plot, fisher: null, scores: null };
  const n = c.evalSamples;
  const p = new Progress(n, { label: "train:stablevm eval", unit: "sample", every: 1 });
  p.start(`${n} samples, midpoint ${c.evalSteps} steps, CFG ${cfg}`);
  const s = await evaluateImageField(field, {
    dataShape: img,
    ...(decoded ? { decode: { dim: data.dim, fn: decoded.decode } } : {}),
    numClasses: C,
    classifier: clf.model,
    n,
    steps: c.evalSteps,
    cfgScale: cfg,
    seed: c.seed + 777,
    onBatch: (done) => p.update(done),
  });
  p.done();
  await ctx.log({
    "eval/fd": s.fd,
    "eval/fd_real_train_test": s.fdRealTrainTest,
    "eval/class_acc": s.classAcc,
    ...Object.fromEntries(s.classAccPerClass.map((a, k) => [`eval/class_acc_${k}`, a])),
  });
  const scores = { ...s, classifier: clf.path };
  await ctx.run.writeFile(
    "eval_images.json",
    JSON.stringify({ step: ctx.step, ...scores, classNames: names }, null, 2) + "\n",
  );
  return { plot, fisher: null, scores };
}
