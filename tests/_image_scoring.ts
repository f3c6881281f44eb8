/**
 * Shared by the image-scoring tests (`eval --metrics fd,class-acc`, `train:stablevm` on
 * Fashion-MNIST): classifiers whose outputs are known in closed form, and the FD of 2-D
 * features computed on the host in f64.
 */
import { buildCfmModel, CLASSIFIER_TASK, nn, saveCheckpoint, tensor } from "../mod.ts";

export const PIXELS = [14 * 28 + 14, 10 * 28 + 20]; // two pixels inside most garments

/** Save a 784 → 2 → 10 classifier with the given weights as a train:classifier checkpoint. */
export async function saveClassifier(
  path: string,
  w1: Float32Array,
  b1: Float32Array,
  b2: Float32Array,
) {
  const c = new nn.MLPClassifier({ inputDim: 784, hidden: [2], numClasses: 10, seed: 0 });
  const sd = c.stateDict();
  const keys = Object.keys(sd).sort(); // net.0.bias, net.0.weight, net.2.bias, net.2.weight
  const values = [b1, w1, b2, new Float32Array(20)];
  const model = Object.fromEntries(keys.map((k, i) => [k, tensor(values[i]!, sd[k]!.shape)]));
  await saveCheckpoint(path, {
    model,
    step: 1,
    config: { task: CLASSIFIER_TASK, inputDim: 784, hidden: [2], numClasses: 10, seed: 0 },
  });
  for (const t of Object.values(model)) t.dispose();
  c.dispose();
}

/**
 * Two classifiers in `dir` with closed-form outputs: `pick` (features = pixels `PIXELS` + 1,
 * in [0, 2], so the ReLU passes them unchanged) and `three` (every image → class 3).
 */
export async function scoringClassifiers(dir: string): Promise<{ pick: string; three: string }> {
  const w1 = new Float32Array(2 * 784);
  w1[PIXELS[0]!] = 1;
  w1[784 + PIXELS[1]!] = 1;
  const pick = `${dir}/pick.safetensors`, three = `${dir}/three.safetensors`;
  await saveClassifier(pick, w1, new Float32Array([1, 1]), new Float32Array(10));
  const b2 = new Float32Array(10);
  b2[3] = 10;
  await saveClassifier(three, new Float32Array(2 * 784), new Float32Array(2), b2);
  return { pick, three };
}

/** The config of a tiny class-conditional `train:cfm` DiT (hidden 8, one block). */
export const TINY_DIT = {
  task: "train:cfm",
  dataset: "fashion-mnist",
  model: "dit-tiny",
  hidden: 8,
  depth: 1,
  dataShape: [1, 28, 28],
  numClasses: 10,
  cfgDropout: 0.1,
  seed: 0,
};

/** Save an untrained {@linkcode TINY_DIT} (with `over` on its config) as a checkpoint. */
export async function saveTinyDit(path: string, over: Record<string, unknown> = {}) {
  const config = { ...TINY_DIT, ...over };
  const net = buildCfmModel(config as Parameters<typeof buildCfmModel>[0]);
  await saveCheckpoint(path, { model: net.stateDict(), step: 0, config });
  net.dispose();
}

/** Host f64 FD of two 2-D samples: tr √(Σ1Σ2) = √(tr M + 2√det M) for M = Σ1Σ2. */
export function fd2(a: number[][], b: number[][]): number {
  const stats = (x: number[][]) => {
    const n = x.length;
    const m = [0, 1].map((j) => x.reduce((s, r) => s + r[j]!, 0) / n);
    const c = (i: number, j: number) =>
      x.reduce((s, r) => s + (r[i]! - m[i]!) * (r[j]! - m[j]!), 0) / (n - 1);
    return { m, s: [c(0, 0), c(0, 1), c(1, 1)] };
  };
  const p = stats(a), q = stats(b);
  const [a0, a1, a2] = p.s as [number, number, number];
  const [b0, b1, b2] = q.s as [number, number, number];
  const trM = a0 * b0 + 2 * a1 * b1 + a2 * b2;
  const detM = (a0 * a2 - a1 * a1) * (b0 * b2 - b1 * b1);
  const d = (p.m[0]! - q.m[0]!) ** 2 + (p.m[1]! - q.m[1]!) ** 2;
  return d + a0 + a2 + b0 + b2 - 2 * Math.sqrt(trM + 2 * Math.sqrt(detM));
}
