/**
 * `train:stablevm --latents` (issue 14, item 6) with tiny budgets: the rows are the f64 VAE's
 * normalised μ of Fashion-MNIST, sampled codes decode as the f64 decoder does, a run writes its
 * decoded class grid and scores, records the autoencoder and resumes, and the flags that cannot
 * go with codes are refused before anything is written.
 */
import { strict as assert } from "node:assert";
import { decodePng, latentLabelledSet, loadAutoencoder, loadFashionMnist } from "../../mod.ts";
import { imageGrid } from "../../viz/mod.ts";
import { main as trainAe } from "../../tasks/train_autoencoder.ts";
import { main as trainSvm } from "../../tasks/train_stablevm.ts";
import { assertClose, quiet } from "../_helpers.ts";
import { decode64, forward64, params64 } from "../_vae.ts";

const FASHION = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
const hasFashion = await Deno.stat(FASHION).then(() => true, () => false);

Deno.test({
  name:
    "train:stablevm --latents: f64 codes and decoder, decoded grid and scores, resume, refusals",
  ignore: !hasFashion,
  fn: async (t) => {
    const out = await Deno.makeTempDir({ prefix: "svm-latent-" });
    const aeDir = `${out}/ae`;
    try {
      await quiet(() =>
        trainAe([
          ...["--hidden", "32", "--latent-dim", "4", "--max-train-steps", "40", "--seed", "2"],
          ...["--batch-size", "64", "--train-limit", "500", "--log-every", "20"],
          ...["--output-dir", out, "--exp-name", "ae"],
        ])
      );

      await t.step(
        "latentLabelledSet: the f64 μ normalised, decoded by the f64 decoder",
        async () => {
          const ae = await loadAutoencoder(aeDir, "--latents");
          const ds = await loadFashionMnist({ limit: 30 });
          const set = await latentLabelledSet(ae, ds);
          const p = await params64(ae.model);
          const { latentMean: m, latentStd: s } = ae.config;
          const mu = forward64(p, ds.images, ds.n).mu.flat();
          assertClose(set.x, mu.map((v, i) => (v - m[i % 4]!) / s[i % 4]!), {
            rtol: 1e-4,
            atol: 1e-4,
          });
          assert.deepEqual([...set.labels], [...ds.labels]);
          const z = Float32Array.from({ length: 12 }, (_, i) => Math.sin(i) * 1.5);
          assertClose(await set.decoded!.decode(z), decode64(p, z, m, s), { atol: 1e-4 });
          assert.deepEqual(set.decoded!.shape, [1, 28, 28]);
          ae.model.dispose();
        },
      );

      const run = `${out}/svm`;
      const args = [
        ...["--latents", aeDir, "--max-train-steps", "4", "--batch-size", "16"],
        ...["--hidden", "16", "--blocks", "1", "--bank-capacity-per-class", "8"],
        ...["--eval-samples", "20", "--eval-steps", "2", "--sample-steps", "2"],
        ...[
          "--checkpoint-every",
          "2",
          "--log-every",
          "2",
          "--output-dir",
          out,
          "--exp-name",
          "svm",
        ],
      ];
      await t.step("a run: decoded class grid, scores, the autoencoder recorded", async () => {
        const r = (await quiet(() => trainSvm(args)))!;
        assert.equal(r.steps, 4);
        assert.ok(Number.isFinite(r.finalLoss));
        // The grid is of 28 × 28 images (10 classes × 8), not of 4-value codes.
        const want = imageGrid(new Float32Array(80 * 784), {
          n: 80,
          channels: 1,
          height: 28,
          width: 28,
          nrow: 8,
        });
        const png = await decodePng(await Deno.readFile(r.samplePlot));
        assert.deepEqual([png.width, png.height], [want.width, want.height]);
        assert.equal(r.eval!.numSamples, 20);
        assert.ok(r.eval!.fd > 0 && Number.isFinite(r.eval!.fd));
        assert.ok(r.eval!.classAcc >= 0 && r.eval!.classAcc <= 1);
        const cfg = JSON.parse(await Deno.readTextFile(`${run}/config.json`));
        const ae = await loadAutoencoder(aeDir, "--latents");
        assert.equal(cfg.latents.latent_dim ?? cfg.latents.latentDim, 4);
        assertClose(cfg.latents.latent_mean ?? cfg.latents.latentMean, ae.config.latentMean);
        ae.model.dispose();
      });

      await t.step("--resume re-opens the recorded autoencoder and continues", async () => {
        const r = (await quiet(() =>
          trainSvm(["--resume", run, "--max-train-steps", "6", "--eval-samples", "0"])
        ))!;
        assert.equal(r.steps, 6);
        assert.equal(r.eval, null);
      });

      await t.step("flags that cannot go with codes are refused before a run exists", async () => {
        const before = [...Deno.readDirSync(out)].length;
        const base = ["--latents", aeDir, "--output-dir", out, "--max-train-steps", "2"];
        await assert.rejects(
          trainSvm([...base, "--model", "dit-tiny"]),
          /--latents .*: codes are flat vectors for --model adaln-mlp; dit-tiny needs images/,
        );
        await assert.rejects(
          trainSvm([...base, "--data-dir", "x.npz"]),
          /--latents .*: the codes are of Fashion-MNIST images; drop --data-dir x\.npz/,
        );
        await assert.rejects(
          trainSvm(["--latents", `${out}/nowhere`, "--output-dir", out]),
          /--latents/,
        );
        assert.equal([...Deno.readDirSync(out)].length, before);
      });
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});
