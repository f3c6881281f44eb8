/**
 * Latent flow matching end to end with tiny budgets: `train:autoencoder` (its test MSE and
 * the codes' normalisation recomputed here with an independent f64 VAE), `train:cfm --latents`
 * (class grid of decoded images, resume), `sample` (decoded images equal the f64 decoder
 * applied to the model's sampled codes), `eval --metrics fd,class-acc` on decoded images,
 * `cluster --encoder` (latents equal the f64 μ), and the bad inputs: foreign or mismatched
 * autoencoders, a moved or replaced one, and flags that cannot go with `--latents`.
 */
import { strict as assert } from "node:assert";
import {
  cfmModelFromCheckpoint,
  classifierAccuracy,
  decodePng,
  latentStats,
  loadAutoencoder,
  loadClassifier,
  loadFashionMnist,
  loadNpy,
  loadNpz,
  nn,
  readCfmCheckpoint,
  sampleCfmModel,
  saveCheckpoint,
} from "../../mod.ts";
import { main as trainAe } from "../../tasks/train_autoencoder.ts";
import { main as trainCfm } from "../../tasks/train_cfm.ts";
import { main as sample } from "../../tasks/sample.ts";
import { main as evalMain } from "../../tasks/eval.ts";
import { main as cluster } from "../../tasks/cluster.ts";
import { assertClose, quiet } from "../_helpers.ts";
import { decode64, forward64, params64 } from "../_vae.ts";

const FASHION = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
const hasFashion = await Deno.stat(FASHION).then(() => true, () => false);
if (!hasFashion) console.log(`latent tests ignored: ${FASHION} missing (dataset-fashion-mnist)`);

const exists = (p: string) => Deno.stat(p).then(() => true, () => false);

Deno.test({
  name:
    "latent flow matching: train:autoencoder, train:cfm --latents, sample, eval and cluster --encoder",
  ignore: !hasFashion,
  fn: async (t) => {
    const out = await Deno.makeTempDir({ prefix: "latent-" });
    const aeDir = `${out}/ae`;
    try {
      await t.step(
        "train:autoencoder: test MSE well below the mean image's; normalisation stored",
        async () => {
          const r = (await quiet(() =>
            trainAe([
              ...["--hidden", "64", "--latent-dim", "4", "--max-train-steps", "300"],
              ...["--batch-size", "64", "--lr", "3e-3", "--train-limit", "2000", "--seed", "1"],
              ...["--output-dir", out, "--exp-name", "ae", "--log-every", "100"],
            ])
          ))!;
          const train = await loadFashionMnist({ limit: 2000 });
          const test = await loadFashionMnist({ split: "test" });
          // The baseline, recomputed: every test image predicted by the mean training image.
          const avg = new Float64Array(784);
          train.images.forEach((v, i) => avg[i % 784]! += v / train.n);
          const base = test.images.reduce((s, v, i) => s + (v - avg[i % 784]!) ** 2, 0) /
            test.images.length;
          assertClose([r.meanImageMse], [base], { rtol: 1e-6 });
          // The test MSE, recomputed with the f64 VAE from the checkpoint's weights.
          const ae = await loadAutoencoder(aeDir, "--latents");
          const p = await params64(ae.model);
          const f = forward64(p, test.images, test.n);
          let se = 0;
          f.recon.forEach((row, i) =>
            row.forEach((v, j) => se += (v - test.images[i * 784 + j]!) ** 2)
          );
          assertClose([r.testMse], [se / test.images.length], { rtol: 1e-4 });
          assert.ok(r.testMse < 0.5 * base, `test MSE ${r.testMse} vs mean image ${base}`);
          // The codes' normalisation: mean and std of the f64 μ over the 2000 training images.
          const mu = forward64(p, train.images, train.n).mu.flat();
          const s = latentStats(Float32Array.from(mu), 4);
          assertClose(ae.config.latentMean, s.latentMean, { rtol: 1e-4, atol: 1e-5 });
          assertClose(ae.config.latentStd, s.latentStd, { rtol: 1e-4, atol: 1e-5 });
          const cfg = JSON.parse(await Deno.readTextFile(`${aeDir}/config.json`));
          assert.deepEqual(cfg.latent_std, ae.config.latentStd);
          const png = await decodePng(await Deno.readFile(`${aeDir}/samples/reconstructions.png`));
          assert.deepEqual([png.width, png.height], [10 * 28 + 11 * 2, 2 * 28 + 3 * 2]);
          const m = (await Deno.readTextFile(`${aeDir}/metrics.jsonl`)).trim().split("\n");
          const last = JSON.parse(m.at(-1)!);
          assert.ok(last["training/loss_recon"] > 0 && last["training/loss_kl"] > 0);
          ae.model.dispose();
        },
      );

      const run = `${out}/lat`;
      await t.step(
        "train:cfm --latents: decoded class grid, config records the autoencoder, resume",
        async () => {
          const args = [
            ...["--latents", aeDir, "--hidden", "32", "--depth", "2", "--batch-size", "64"],
            ...[
              "--sample-steps",
              "2",
              "--output-dir",
              out,
              "--exp-name",
              "lat",
              "--log-every",
              "10",
            ],
          ];
          const r = (await quiet(() => trainCfm([...args, "--max-train-steps", "20"])))!;
          const png = await decodePng(await Deno.readFile(r.samplePlot));
          // One row per class, 8 decoded 28×28 images each.
          assert.deepEqual([png.width, png.height], [8 * 28 + 9 * 2, 10 * 28 + 11 * 2]);
          const ck = await readCfmCheckpoint(run);
          const lat = ck.config.latents as Record<string, unknown>;
          assert.deepEqual(ck.config.dataShape, [4]);
          assert.equal(ck.config.dataset, "fashion-mnist");
          assert.equal(ck.config.model, "velocity-mlp");
          assert.match(lat.autoencoder as string, /ae\/checkpoints\/last\.safetensors$/);
          assert.deepEqual(lat.dataShape, [1, 28, 28]);
          const again = (await quiet(() =>
            trainCfm(["--resume", run, "--max-train-steps", "30"])
          ))!;
          assert.equal(again.steps, 30);
        },
      );

      await t.step(
        "sample: the decoded images are the f64 decoder applied to the sampled codes",
        async () => {
          const r = (await quiet(() =>
            sample([
              ...["--checkpoint", run, "--num-samples", "6", "--num-steps", "3"],
              ...["--seed", "5", "--cfg-scale", "1", "--out", `${out}/s.npz`],
            ])
          ))!;
          assert.deepEqual(r.shape, [1, 28, 28]);
          const { arr_0 } = await loadNpz(`${out}/s.npz`);
          assert.deepEqual(arr_0!.shape, [6, 28, 28, 3]);
          // The same codes from the model directly, then decoded by the f64 reference.
          const ck = await readCfmCheckpoint(run);
          const model = cfmModelFromCheckpoint(ck);
          const z = await sampleCfmModel(model, [4], { n: 6, sampler: "euler", steps: 3, seed: 5 });
          model.dispose();
          const ae = await loadAutoencoder(aeDir, "--latents");
          const x = decode64(
            await params64(ae.model),
            z.x,
            ae.config.latentMean,
            ae.config.latentStd,
          );
          ae.model.dispose();
          const want = x.map((v) => Math.round((Math.min(1, Math.max(-1, v)) + 1) * 127.5));
          const got = Array.from({ length: x.length }, (_, i) => arr_0!.data[i * 3]!);
          assertClose(got, want, { rtol: 0, atol: 1 });
          const grid = (await quiet(() =>
            sample([
              ...["--checkpoint", run, "--class-grid", "--samples-per-class", "2"],
              ...[
                "--num-steps",
                "2",
                "--cfg-scale",
                "2",
                "--upscale",
                "1",
                "--out",
                `${out}/g.png`,
              ],
            ])
          ))!;
          assert.equal(grid.n, 20);
          const png = await decodePng(await Deno.readFile(`${out}/g.png`));
          assert.deepEqual([png.width, png.height], [2 * 28 + 3 * 2, 10 * 28 + 11 * 2]);
        },
      );

      await t.step("eval --metrics fd,class-acc scores decoded images", async () => {
        const rec = (await quiet(() =>
          evalMain([
            ...["--checkpoint", run, "--metrics", "fd,class-acc,w2", "--num-samples", "40"],
            ...["--num-steps", "2"],
          ])
        ))!;
        assert.ok(Number.isFinite(rec.fd!) && rec.fd! > 0);
        assert.ok(Number.isFinite(rec.w2!));
        // Class agreement recomputed on the f64-decoded samples of the same draw.
        const ck = await readCfmCheckpoint(run);
        const model = cfmModelFromCheckpoint(ck);
        const labels = Float32Array.from({ length: 40 }, (_, i) => i % 10);
        const z = await sampleCfmModel(model, [4], {
          n: 40,
          sampler: "euler",
          steps: 2,
          seed: 0,
          labels,
          cfgScale: 1,
        });
        model.dispose();
        const ae = await loadAutoencoder(aeDir, "--latents");
        const x = decode64(
          await params64(ae.model),
          z.x,
          ae.config.latentMean,
          ae.config.latentStd,
        );
        ae.model.dispose();
        const clf = await loadClassifier("assets/classifier_fmnist.safetensors");
        const acc = await classifierAccuracy(clf.model, Float32Array.from(x), labels);
        clf.model.dispose();
        assert.ok(
          Math.abs(acc.accuracy - rec.classAcc!) <= 1 / 40 + 1e-9,
          `${acc.accuracy} vs ${rec.classAcc}`,
        );
      });

      await t.step("cluster --encoder: latents.npy holds the autoencoder's μ", async () => {
        const r = (await quiet(() =>
          cluster([
            ...["--encoder", aeDir, "--n-samples", "300", "--n-clusters", "5"],
            ...["--out-dir", `${out}/cl`, "--seed", "2"],
          ])
        ))!;
        assert.equal(r.d, 4);
        const lat = await loadNpy(`${out}/cl/latents.npy`);
        assert.deepEqual(lat.shape, [300, 4]);
        const ae = await loadAutoencoder(aeDir, "--encoder");
        const train = await loadFashionMnist({ limit: 300 });
        const mu = forward64(await params64(ae.model), train.images, 300).mu.flat();
        assertClose(lat.data, mu, { rtol: 1e-4, atol: 1e-5 });
        const meta = JSON.parse(await Deno.readTextFile(`${out}/cl/cluster_meta.json`));
        assert.equal(meta.encoder, ae.path);
        assert.equal(meta.d, 4);
        ae.model.dispose();
      });

      await t.step("bad inputs: clear RangeErrors before anything is written", async () => {
        const cfm = (...a: string[]) =>
          quiet(() => trainCfm([...a, "--output-dir", out, "--exp-name", "bad"]));
        await assert.rejects(
          cfm("--latents", "assets/classifier_fmnist.safetensors"),
          /^RangeError: --latents assets\/classifier_fmnist\.safetensors: a train:classifier checkpoint .*expected a train:autoencoder run/,
        );
        await assert.rejects(
          cfm("--latents", aeDir, "--dataset", "moons"),
          /--latents .*: the codes are of Fashion-MNIST images; use it with --dataset fashion-mnist, not moons/,
        );
        await assert.rejects(
          cfm("--latents", aeDir, "--model", "dit-tiny"),
          /--latents .*: codes are flat vectors for an MLP \(--model velocity-mlp in train:cfm, adaln-mlp in train:stablevm\); dit-tiny needs images/,
        );
        // An autoencoder of 8×8 images does not fit Fashion-MNIST.
        const small = new nn.VAE({ inputDim: 64, latentDim: 2, hidden: [4], seed: 0 });
        await saveCheckpoint(`${out}/small.safetensors`, {
          model: small.stateDict(),
          step: 1,
          config: {
            task: "train:autoencoder",
            dataShape: [1, 8, 8],
            latentDim: 2,
            hidden: [4],
            seed: 0,
            latentMean: [0, 0],
            latentStd: [1, 1],
          },
        });
        small.dispose();
        await assert.rejects(
          cfm("--latents", `${out}/small.safetensors`),
          /--latents .*small\.safetensors: the autoencoder takes images of shape \[1,8,8\] but fashion-mnist has images of shape \[1,28,28\]/,
        );
        assert.equal(await exists(`${out}/bad`), false);
        const cl = (...a: string[]) => quiet(() => cluster([...a, "--out-dir", `${out}/badcl`]));
        await assert.rejects(cl("--encoder", `${out}/nope`), /--encoder .*nope: no such file/);
        await assert.rejects(
          cl("--encoder", `${out}/small.safetensors`, "--n-samples", "10", "--n-clusters", "2"),
          /--encoder .*: the autoencoder takes images of shape \[1,8,8\]/,
        );
        await assert.rejects(
          cl("--encoder", aeDir, "--dataset", "moons"),
          /--encoder .*: an autoencoder encodes images; use --dataset fashion-mnist/,
        );
        assert.equal(await exists(`${out}/badcl`), false);
        // The run's autoencoder replaced by another one, then moved away.
        const file = `${aeDir}/checkpoints/last.safetensors`;
        await Deno.rename(file, `${out}/kept.safetensors`);
        await Deno.copyFile(`${out}/small.safetensors`, file);
        const s = (...a: string[]) => quiet(() => sample(["--checkpoint", run, ...a]));
        await assert.rejects(
          s("--out", `${out}/x.png`),
          /the run's --latents .*: not the autoencoder this run was trained on/,
        );
        await Deno.remove(file);
        await assert.rejects(
          s("--out", `${out}/x.png`),
          /the run's --latents .*last\.safetensors: no such file/,
        );
        await assert.rejects(
          quiet(() => evalMain(["--checkpoint", run, "--metrics", "w2", "--num-samples", "10"])),
          /the run's --latents .*: no such file/,
        );
        assert.equal(await exists(`${out}/x.png`), false);
      });
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});

Deno.test({
  name: "train:autoencoder --resume continues to the new budget and recomputes the normalisation",
  ignore: !hasFashion,
  fn: async () => {
    const out = await Deno.makeTempDir({ prefix: "latent-resume-" });
    try {
      const base = ["--hidden", "16", "--latent-dim", "2", "--train-limit", "500"];
      const where = ["--output-dir", out, "--exp-name", "ae", "--log-every", "10"];
      await quiet(() => trainAe([...base, ...where, "--max-train-steps", "20"]));
      const first = await loadAutoencoder(`${out}/ae`, "--latents");
      first.model.dispose();
      const r = (await quiet(() => trainAe(["--resume", `${out}/ae`, "--max-train-steps", "40"])))!;
      assert.equal(r.steps, 40);
      const ae = await loadAutoencoder(`${out}/ae`, "--latents");
      assert.equal(ae.step, 40);
      // The statistics are those of the resumed weights, recomputed with the f64 μ.
      const train = await loadFashionMnist({ limit: 500 });
      const mu = forward64(await params64(ae.model), train.images, 500).mu.flat();
      const s = latentStats(Float32Array.from(mu), 2);
      assertClose(ae.config.latentMean, s.latentMean, { rtol: 1e-4, atol: 1e-5 });
      assert.notDeepEqual(ae.config.latentMean, first.config.latentMean);
      const m = (await Deno.readTextFile(`${out}/ae/metrics.jsonl`)).trim().split("\n");
      assert.deepEqual(m.map((l) => JSON.parse(l).step), [10, 20, 30, 40]);
      ae.model.dispose();
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});
