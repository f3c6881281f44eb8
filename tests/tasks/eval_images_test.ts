/**
 * @file `deno task eval --metrics fd,class-acc` on an image checkpoint, with classifiers whose
 * outputs are known in closed form: one whose features are two chosen pixels (so the FD of
 * real train vs test images is recomputed here from the pixels, with the 2×2 matrix square
 * root in closed form), and one that always answers class 3 (so the class agreement of the
 * balanced intended labels i mod 10 is exactly 1/10, all of it in class 3).
 */
import { strict as assert } from "node:assert";
import {
  buildCfmModel,
  CLASSIFIER_TASK,
  loadFashionMnist,
  nn,
  saveCheckpoint,
  tensor,
} from "../../mod.ts";
import { main as evalMain } from "../../tasks/eval.ts";
import { assertClose } from "../_helpers.ts";

const FASHION = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
const hasFashion = await Deno.stat(FASHION).then(() => true, () => false);
if (!hasFashion) {
  console.log(`eval image-metric tests ignored: ${FASHION} missing (dataset-fashion-mnist)`);
}

const PIXELS = [14 * 28 + 14, 10 * 28 + 20]; // two pixels inside most garments

/** Save a 784 → 2 → 10 classifier with the given weights as a train:classifier checkpoint. */
async function saveClassifier(path: string, w1: Float32Array, b1: Float32Array, b2: Float32Array) {
  const c = new nn.MLPClassifier({ inputDim: 784, hidden: [2], numClasses: 10, seed: 0 });
  const sd = c.stateDict();
  const keys = Object.keys(sd).sort(); // net.0.bias, net.0.weight, net.2.bias, net.2.weight
  const shapes = keys.map((k) => sd[k]!.shape);
  const values: Record<string, Float32Array> = {
    [keys[0]!]: b1,
    [keys[1]!]: w1,
    [keys[2]!]: b2,
    [keys[3]!]: new Float32Array(20),
  };
  const model = Object.fromEntries(keys.map((k, i) => [k, tensor(values[k]!, shapes[i]!)]));
  await saveCheckpoint(path, {
    model,
    step: 1,
    config: { task: CLASSIFIER_TASK, inputDim: 784, hidden: [2], numClasses: 10, seed: 0 },
  });
  c.dispose();
}

/** Host f64 FD of two 2-D samples: tr √(Σ1Σ2) = √(tr M + 2√det M) for M = Σ1Σ2. */
function fd2(a: number[][], b: number[][]): number {
  const stats = (x: number[][]) => {
    const n = x.length;
    const m = [0, 1].map((j) => x.reduce((s, r) => s + r[j]!, 0) / n);
    const c = (i: number, j: number) =>
      x.reduce((s, r) => s + (r[i]! - m[i]!) * (r[j]! - m[j]!), 0) / (n - 1);
    return { m, s: [c(0, 0), c(0, 1), c(1, 1)] };
  };
  const p = stats(a), q = stats(b);
  const [a0, a1, a2] = p.s as [number, number, number],
    [b0, b1, b2] = q.s as [number, number, number];
  const trM = a0 * b0 + 2 * a1 * b1 + a2 * b2;
  const detM = (a0 * a2 - a1 * a1) * (b0 * b2 - b1 * b1);
  const d = (p.m[0]! - q.m[0]!) ** 2 + (p.m[1]! - q.m[1]!) ** 2;
  return d + a0 + a2 + b0 + b2 - 2 * Math.sqrt(trM + 2 * Math.sqrt(detM));
}

Deno.test({
  name:
    "eval --metrics fd,class-acc: FD floor from two pixels and class agreement of a constant classifier",
  ignore: !hasFashion,
  fn: async () => {
    const out = await Deno.makeTempDir({ prefix: "eval-images-" });
    try {
      const cfg = {
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
      const net = buildCfmModel(cfg as Parameters<typeof buildCfmModel>[0]);
      await saveCheckpoint(`${out}/dit.safetensors`, {
        model: net.stateDict(),
        step: 0,
        config: cfg,
      });
      net.dispose();
      // Features = the two pixels + 1 (in [0, 2], so the ReLU passes them unchanged).
      const w1 = new Float32Array(2 * 784);
      w1[PIXELS[0]!] = 1;
      w1[784 + PIXELS[1]!] = 1;
      const pick = `${out}/pick.safetensors`, three = `${out}/three.safetensors`;
      await saveClassifier(pick, w1, new Float32Array([1, 1]), new Float32Array(10));
      const b2 = new Float32Array(10);
      b2[3] = 10;
      await saveClassifier(three, new Float32Array(2 * 784), new Float32Array(2), b2);
      const n = 60;
      const common = ["--checkpoint", `${out}/dit.safetensors`, "--num-samples", `${n}`];
      const r =
        (await evalMain([...common, "--num-steps", "1", "--metrics", "fd", "--classifier", pick]))!;
      const train = await loadFashionMnist({ split: "train", limit: n });
      const test = await loadFashionMnist({ split: "test", limit: n });
      const rows = (x: Float32Array) =>
        Array.from({ length: n }, (_, i) => PIXELS.map((p) => x[i * 784 + p]! + 1));
      assertClose([r.fdRealTrainTest!], [fd2(rows(train.images), rows(test.images))], {
        rtol: 1e-5,
        atol: 1e-7,
        msg: "FD of real train vs test images",
      });
      // Noise-like samples of an untrained model sit further from the test images.
      assert.ok(r.fd! > r.fdRealTrainTest!, `fd ${r.fd} vs real ${r.fdRealTrainTest}`);
      assert.equal(r.classifier, pick);

      const s = (await evalMain([
        ...common,
        "--num-steps",
        "1",
        "--metrics",
        "class-acc",
        "--classifier",
        three,
      ]))!;
      assert.equal(s.classAcc, 0.1); // labels i mod 10: 6 of 60 are class 3
      assert.deepEqual(s.classAccPerClass, [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
      assert.equal(s.cfgScale, 1);

      // An unconditional or 2-D checkpoint, and a classifier of the wrong width, are refused.
      await saveCheckpoint(`${out}/uncond.safetensors`, {
        model: buildCfmModel({ ...cfg, numClasses: 0 } as Parameters<typeof buildCfmModel>[0])
          .stateDict(),
        step: 0,
        config: { ...cfg, numClasses: 0 },
      });
      await assert.rejects(
        () =>
          evalMain([
            "--checkpoint",
            `${out}/uncond.safetensors`,
            "--metrics",
            "class-acc",
            "--classifier",
            three,
          ]),
        /class-acc needs a class-conditional checkpoint/,
      );
      await assert.rejects(
        () => evalMain([...common, "--metrics", "fd", "--classifier", `${out}/none.safetensors`]),
        /--classifier .*none.safetensors: no such file; train one with deno task train:classifier/,
      );
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});
