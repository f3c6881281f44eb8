/**
 * @file Scoring image samples (`scoreImages`, shared by `eval` and `train:stablevm`) against
 * independent computations, and `train:stablevm`'s scores on Fashion-MNIST with classifiers
 * whose outputs are known in closed form: one whose features are two chosen pixels (the FD
 * floor is recomputed here from the pixels, with the 2×2 matrix square root in closed form)
 * and one that always answers class 3 (class agreement of the balanced labels i mod 10 is
 * exactly 1/10, all of it in class 3). Then the image flags' refusals, each naming the flag.
 */
import { strict as assert } from "node:assert";
import {
  encodeNpz,
  getBackend,
  loadClassifier,
  loadFashionMnist,
  readMetrics,
  scoreImages,
  tensor,
} from "../../mod.ts";
import { main } from "../../tasks/train_stablevm.ts";
import { assertClose } from "../_helpers.ts";
import { fd2, PIXELS, scoringClassifiers } from "../_image_scoring.ts";

const FASHION = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
const hasFashion = await Deno.stat(FASHION).then(() => true, () => false);
if (!hasFashion) {
  console.log(`stablevm image tests ignored: ${FASHION} missing (dataset-fashion-mnist)`);
}

Deno.test({
  name: "scoreImages: the shipped classifier's agreement with true test labels is its accuracy; " +
    "FD of a set with itself is 0",
  ignore: !hasFashion,
  fn: async () => {
    const clf = await loadClassifier("assets/classifier_fmnist.safetensors");
    try {
      const n = 400;
      const test = await loadFashionMnist({ split: "test", limit: n });
      const s = await scoreImages(clf.model, test.images, {
        reference: test.images,
        labels: test.labels,
      });
      // Independently: the logits row by row, argmax on the host, counted per class.
      const logits = clf.model.forward(tensor(test.images, [n, 784]));
      const z = await logits.data();
      logits.dispose();
      const hit = new Array(10).fill(0), tot = new Array(10).fill(0);
      let ok = 0;
      for (let i = 0; i < n; i++) {
        const row = Array.from(z.subarray(i * 10, i * 10 + 10));
        const k = row.indexOf(Math.max(...row)), y = test.labels[i]!;
        tot[y]++;
        if (k === y) (ok++, hit[y]++);
      }
      assert.equal(s.classAcc, ok / n);
      assert.deepEqual(s.classAccPerClass, hit.map((h, k) => h / tot[k]));
      assert.ok(s.classAcc! > 0.8, `the shipped classifier is ~90% accurate: ${s.classAcc}`);
      assert.ok(Math.abs(s.fd!) < 1e-3, `FD of identical sets ${s.fd}`);
      assert.equal(s.fdRealTrainTest, undefined); // no `real` images given
      await assert.rejects(
        () => scoreImages(clf.model, new Float32Array(783), {}),
        /rows of the classifier's 784 inputs but found 783 values/,
      );
    } finally {
      clf.model.dispose();
    }
  },
});

Deno.test({
  name: "train:stablevm on fashion-mnist: guided grid, FD floor from two pixels, class agreement " +
    "of a constant classifier; logged, written, returned",
  ignore: !hasFashion,
  fn: async () => {
    const out = await Deno.makeTempDir({ prefix: "stablevm-img-" });
    try {
      const { pick, three } = await scoringClassifiers(out);
      const n = 60;
      const base = [
        ...["--data-dir", "fashion-mnist", "--model", "dit-tiny", "--hidden", "16"],
        ...["--blocks", "1", "--batch-size", "8", "--max-train-steps", "2", "--sample-steps"],
        ...["2", "--output-dir", out],
      ];
      const common = [...base, "--eval-samples", `${n}`, "--eval-steps", "2"];
      // --eval-samples 0 turns the scores off; what such a run leaves allocated (a constant
      // of fit's, not ours) is what a scored run may leave: the classifier is freed.
      let before = getBackend().liveBytes();
      const u = (await main([...base, "--eval-samples", "0", "--exp-name", "off"]))!;
      assert.equal(u.eval, null);
      const kept = getBackend().liveBytes() - before;
      assert.ok(kept < 4096, `${kept} bytes left by a run`);
      before = getBackend().liveBytes();
      const r = (await main([...common, "--exp-name", "pick", "--classifier", pick]))!;
      assert.equal(getBackend().liveBytes() - before, kept, "the classifier and samples freed");
      const train = await loadFashionMnist({ split: "train", limit: n });
      const test = await loadFashionMnist({ split: "test", limit: n });
      const rows = (x: Float32Array) =>
        Array.from({ length: n }, (_, i) => PIXELS.map((p) => x[i * 784 + p]! + 1));
      assert.ok(r.eval);
      assertClose([r.eval.fdRealTrainTest], [fd2(rows(train.images), rows(test.images))], {
        rtol: 1e-5,
        atol: 1e-7,
        msg: "FD of real train vs test images",
      });
      assert.ok(Number.isFinite(r.eval.fd) && r.eval.fd >= 0);
      assert.deepEqual(
        [r.eval.numSamples, r.eval.steps, r.eval.cfgScale, r.eval.classifier],
        [n, 2, 3, pick],
      );
      assert.ok(Number.isFinite(r.stepMs) && r.stepMs > 0);
      const m = (await readMetrics(r.metrics)).find((x) => "eval/fd" in x)!;
      assert.equal(m.step, 2);
      assert.equal(m["eval/fd"], r.eval.fd);
      assert.equal(m["eval/fd_real_train_test"], r.eval.fdRealTrainTest);
      const saved = JSON.parse(await Deno.readTextFile(`${r.runDir}/eval_images.json`));
      assert.equal(saved.fd, r.eval.fd);
      assert.equal(saved.classNames[9], "Ankle boot");
      const cfg = JSON.parse(await Deno.readTextFile(`${r.runDir}/config.json`));
      assert.deepEqual([cfg.cfg_scale, cfg.eval_samples, cfg.eval_steps], [3, n, 2]);
      const svg = await Deno.readTextFile(r.samplePlot.replace(/\.png$/, ".svg"));
      assert.match(svg, /CFG 3/);

      // The constant classifier: labels i mod 10, so 6 of 60 agree, all of them class 3.
      const s = (await main([
        ...common,
        ...["--exp-name", "three", "--classifier", three, "--cfg-scale", "1.5"],
      ]))!;
      assert.equal(s.eval!.classAcc, 0.1);
      assert.deepEqual(s.eval!.classAccPerClass, [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
      assert.equal(s.eval!.cfgScale, 1.5);
      // Resuming the finished run re-scores it with a new flag, without training.
      const t = (await main(["--resume", s.runDir, "--classifier", pick]))!;
      assert.equal(t.steps, 2);
      assert.ok(Number.isNaN(t.stepMs));
      assert.equal(t.eval!.classifier, pick);
      assert.equal(t.eval!.fdRealTrainTest, r.eval.fdRealTrainTest);

      // A classifier that does not exist is refused before a run directory exists.
      await assert.rejects(
        () => main([...common, "--exp-name", "bad", "--classifier", `${out}/none.safetensors`]),
        /--classifier .*none\.safetensors: no such file/,
      );
      await assert.rejects(() => Deno.stat(`${out}/bad`), Deno.errors.NotFound);
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});

Deno.test("train:stablevm image flags on the wrong data are refused, naming the flag, before any run", async () => {
  const out = await Deno.makeTempDir({ prefix: "stablevm-img-flags-" });
  try {
    const quick = ["--max-train-steps", "1", "--output-dir", out];
    // 2-D vectors (the embedded ring): no images, nothing to guide or score.
    for (
      const [flag, v] of [["--eval-samples", "100"], ["--eval-steps", "5"], ["--cfg-scale", "2"]]
    ) {
      await assert.rejects(
        () => main([flag!, v!, ...quick]),
        (e: Error) =>
          e instanceof RangeError && e.message.startsWith(flag!) && /2-D vectors/.test(e.message),
        flag,
      );
    }
    await assert.rejects(
      () => main(["--classifier", "assets/classifier_fmnist.safetensors", ...quick]),
      /--classifier scores class-conditional Fashion-MNIST samples/,
    );
    await assert.rejects(
      () => main(["--cfg-scale", "-1", ...quick]),
      /Expected --cfg-scale to be a number >= 0 but found -1/,
    );
    await assert.rejects(() => main(["--eval-samples", "1", ...quick]), /0 \(off\) or at least 2/);
    await assert.rejects(
      () => main(["--eval-samples", "0", "--eval-steps", "4", ...quick]),
      /--eval-steps has no effect with --eval-samples 0/,
    );
    await assert.rejects(
      () => main(["--eval-samples", "10001", ...quick]),
      /--eval-samples to be an integer in \[0, 10000\]/,
    );
    // Images that are not Fashion-MNIST: the grid can be guided, but not scored.
    const n = 12;
    await Deno.writeFile(
      `${out}/img.npz`,
      encodeNpz({
        x: { data: new Float32Array(n * 64).map((_, i) => Math.sin(i)), shape: [n, 8, 8] },
        labels: { data: new Int32Array(n).map((_, i) => i % 2), shape: [n], dtype: "<i8" },
      }),
    );
    await assert.rejects(
      () => main(["--data-dir", `${out}/img.npz`, "--eval-samples", "10", ...quick]),
      /--eval-samples scores class-conditional Fashion-MNIST samples .* images of shape \[1,8,8\]/,
    );
    await Deno.writeFile(
      `${out}/one.npz`,
      encodeNpz({
        x: { data: new Float32Array(n * 64), shape: [n, 8, 8] },
        labels: { data: new Int32Array(n), shape: [n], dtype: "<i8" },
      }),
    );
    await assert.rejects(
      () => main(["--data-dir", `${out}/one.npz`, "--cfg-scale", "2", ...quick]),
      /--cfg-scale guides the class grid of class-conditional image data .* 1 class/,
    );
    assert.deepEqual(
      [...Deno.readDirSync(out)].map((e) => e.name).sort(),
      ["img.npz", "one.npz"],
      "no run directory",
    );
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
