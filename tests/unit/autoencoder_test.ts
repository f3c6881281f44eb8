/**
 * Tests for the latent-flow autoencoder (lib/nn/vae.ts, lib/train/autoencoder.ts,
 * lib/train/latent.ts) against an independent f64 implementation in plain JS (tests/_vae.ts):
 * the forward pass, the VAE loss and its gradient (central differences of the f64 loss), the
 * codes' normalisation, decoding of normalised codes, and the checkpoint reader's errors.
 */
import { strict as assert } from "node:assert";
import {
  AUTOENCODER_TASK,
  decodeLatents,
  encodeImages,
  latentStats,
  loadAutoencoder,
  nn,
  randn,
  saveCheckpoint,
  tensor,
  vaeLoss,
  valueAndGrad,
} from "../../mod.ts";
import { assertClose } from "../_helpers.ts";
import { fdGrad } from "../_fd.ts";
import { forward64, loss64, params64 } from "../_vae.ts";

Deno.test("VAE: μ, log σ² and the reparameterised reconstruction equal an f64 forward; [B, 1, H, W] is flattened", async () => {
  const vae = new nn.VAE({ inputDim: 12, latentDim: 3, hidden: [7, 5], seed: 2 });
  const x = await randn([4, 12], { seed: 3 }).data();
  const eps = await randn([4, 3], { seed: 4 }).data();
  const want = forward64(await params64(vae), x, 4, eps);
  const r = vae.forward(tensor(x, [4, 1, 3, 4]), tensor(eps, [4, 3]));
  assertClose(await r.mu.data(), want.mu.flat(), { rtol: 1e-5, atol: 1e-6 });
  assertClose(await r.logvar.data(), want.logvar.flat(), { rtol: 1e-5, atol: 1e-6 });
  assertClose(await r.recon.data(), want.recon.flat(), { rtol: 1e-5, atol: 1e-6 });
  // encode is μ; decode(μ) is the reconstruction without noise.
  assertClose(await vae.encode(tensor(x, [4, 12])).data(), want.mu.flat(), { atol: 1e-6 });
  const noNoise = forward64(await params64(vae), x, 4);
  assertClose(
    await vae.decode(vae.encode(tensor(x, [4, 12]))).data(),
    noNoise.recon.flat(),
    { rtol: 1e-5, atol: 1e-6 },
  );
  assert.throws(() => vae.encode(tensor(new Float32Array(10), [2, 5])), /12 values per row/);
  assert.throws(() => vae.decode(tensor(new Float32Array(8), [2, 4])), /codes \[B, 3\]/);
  vae.dispose();
});

Deno.test("vaeLoss: value and gradient w.r.t. every parameter match f64 central differences", async () => {
  const beta = 0.3; // large, so the KL part of the gradient is visible beside the MSE
  const vae = new nn.VAE({ inputDim: 6, latentDim: 2, hidden: [5, 4], seed: 5 });
  const x = await randn([4, 6], { seed: 6 }).data();
  const eps = await randn([4, 2], { seed: 7 }).data();
  const xt = tensor(x, [4, 6]), et = tensor(eps, [4, 2]);
  const params = vae.parameters();
  const [v, g] = valueAndGrad((_p: typeof params) => {
    const r = vae.forward(xt, et);
    return vaeLoss(r.recon, xt, r.mu, r.logvar, beta).loss;
  })(params);
  const p = await params64(vae);
  const ref = loss64(forward64(p, x, 4, eps), x, beta);
  assert.ok(ref.kl > 0.05 && ref.recon > 0.05, "both terms matter");
  assertClose([await v.item()], [ref.loss], { rtol: 1e-5 });
  const terms = (() => {
    const r = vae.forward(xt, et);
    return vaeLoss(r.recon, xt, r.mu, r.logvar, beta);
  })();
  assertClose([await terms.recon.item(), await terms.kl.item()], [ref.recon, ref.kl], {
    rtol: 1e-5,
  });
  const fd = fdGrad(
    (vals) => loss64(forward64({ ...p, values: vals }, x, 4, eps), x, beta).loss,
    p.values,
  );
  for (let i = 0; i < params.length; i++) {
    assertClose(await g[i]!.data(), fd[i]!, { rtol: 1e-3, atol: 2e-5, msg: p.names[i] });
  }
  vae.dispose();
});

Deno.test("latentStats and decodeLatents: per-dimension mean/std of codes, decode(mean + std·z)", async () => {
  const z = await randn([50, 3], { seed: 8 }).data();
  const s = latentStats(z, 3);
  for (let k = 0; k < 3; k++) {
    const col = Array.from({ length: 50 }, (_, i) => z[i * 3 + k]!);
    const m = col.reduce((a, b) => a + b, 0) / 50;
    const sd = Math.sqrt(col.reduce((a, b) => a + (b - m) ** 2, 0) / 50);
    assertClose([s.latentMean[k]!, s.latentStd[k]!], [m, sd], { rtol: 1e-12, atol: 1e-12 });
  }
  const model = new nn.VAE({ inputDim: 5, latentDim: 3, hidden: [4], seed: 9 });
  const config = { dataShape: [1, 1, 5], latentDim: 3, hidden: [4], seed: 0, ...s };
  const x = await decodeLatents({ path: "mem", model, config, step: 0 }, z.subarray(0, 6));
  // The same images from the f64 decoder applied to mean + std·z (via μ = that, ε = 0).
  const p = await params64(model);
  const codes = Array.from(
    z.subarray(0, 6),
    (v, i) => s.latentMean[i % 3]! + s.latentStd[i % 3]! * v,
  );
  const want = codes.length / 3;
  const dec = await model.decode(tensor(Float32Array.from(codes), [want, 3])).data();
  assertClose(x, dec, { rtol: 1e-6, atol: 1e-7 });
  // And the encoder path: encodeImages equals the f64 μ.
  const imgs = await randn([7, 5], { seed: 10 }).data();
  assertClose(await encodeImages(model, imgs, 3), forward64(p, imgs, 7).mu.flat(), {
    rtol: 1e-5,
    atol: 1e-6,
  });
  assert.throws(() => latentStats(new Float32Array(5), 3), /codes \[n, 3\]/);
  model.dispose();
});

Deno.test("loadAutoencoder: foreign files, missing normalisation and other images are RangeErrors naming the flag", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ae-load-" });
  try {
    const vae = new nn.VAE({ inputDim: 784, latentDim: 2, hidden: [4], seed: 0 });
    const base = {
      task: AUTOENCODER_TASK,
      dataShape: [1, 28, 28],
      latentDim: 2,
      hidden: [4],
      seed: 0,
    };
    const stats = { latentMean: [0, 1], latentStd: [1, 2] };
    await saveCheckpoint(`${dir}/ok.safetensors`, {
      model: vae.stateDict(),
      step: 3,
      config: { ...base, ...stats },
    });
    const ae = await loadAutoencoder(`${dir}/ok.safetensors`, "--latents");
    assert.deepEqual([ae.step, ae.config.latentStd, ae.model.training], [3, [1, 2], false]);
    ae.model.dispose();
    await saveCheckpoint(`${dir}/nostats.safetensors`, {
      model: vae.stateDict(),
      step: 3,
      config: base,
    });
    await assert.rejects(
      loadAutoencoder(`${dir}/nostats.safetensors`, "--latents"),
      (e) =>
        e instanceof RangeError &&
        /^--latents .*nostats\.safetensors: the checkpoint has no latent normalisation/.test(
          e.message,
        ),
    );
    await saveCheckpoint(`${dir}/cfm.safetensors`, {
      model: vae.stateDict(),
      step: 3,
      config: { task: "train:cfm" },
    });
    await assert.rejects(
      loadAutoencoder(`${dir}/cfm.safetensors`, "--encoder"),
      /^RangeError: --encoder .*cfm\.safetensors: a train:cfm checkpoint .*train:autoencoder/,
    );
    await Deno.writeTextFile(`${dir}/junk.safetensors`, "not a checkpoint");
    await assert.rejects(
      loadAutoencoder(`${dir}/junk.safetensors`, "--latents"),
      /^RangeError: --latents .*junk\.safetensors: .*expected a train:autoencoder run/,
    );
    await assert.rejects(
      loadAutoencoder(`${dir}/ok.safetensors`, "--latents", {
        dataShape: [3, 32, 32],
        dataset: "cifar",
      }),
      /--latents .*ok\.safetensors: the autoencoder takes images of shape \[1,28,28\] but cifar has images of shape \[3,32,32\]/,
    );
    // A run directory resolves to its checkpoints/last.safetensors.
    await Deno.mkdir(`${dir}/run/checkpoints`, { recursive: true });
    await Deno.copyFile(`${dir}/ok.safetensors`, `${dir}/run/checkpoints/last.safetensors`);
    const fromDir = await loadAutoencoder(`${dir}/run/`, "--encoder");
    assert.match(fromDir.path, /run\/checkpoints\/last\.safetensors$/);
    fromDir.model.dispose();
    vae.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
