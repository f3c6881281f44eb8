/**
 * @file `deno task eval --metrics fd,class-acc` on an image checkpoint, with classifiers whose
 * outputs are known in closed form: one whose features are two chosen pixels (so the FD of
 * real train vs test images is recomputed here from the pixels, with the 2×2 matrix square
 * root in closed form), and one that always answers class 3 (so the class agreement of the
 * balanced intended labels i mod 10 is exactly 1/10, all of it in class 3).
 */
import { strict as assert } from "node:assert";
import { loadFashionMnist } from "../../mod.ts";
import { main as evalMain } from "../../tasks/eval.ts";
import { assertClose } from "../_helpers.ts";
import { fd2, PIXELS, saveTinyDit, scoringClassifiers } from "../_image_scoring.ts";

const FASHION = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
const hasFashion = await Deno.stat(FASHION).then(() => true, () => false);
if (!hasFashion) {
  console.log(`eval image-metric tests ignored: ${FASHION} missing (dataset-fashion-mnist)`);
}

Deno.test({
  name:
    "eval --metrics fd,class-acc: FD floor from two pixels and class agreement of a constant classifier",
  ignore: !hasFashion,
  fn: async () => {
    const out = await Deno.makeTempDir({ prefix: "eval-images-" });
    try {
      await saveTinyDit(`${out}/dit.safetensors`);
      const { pick, three } = await scoringClassifiers(out);
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
      await saveTinyDit(`${out}/uncond.safetensors`, { numClasses: 0 });
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
