/**
 * @file lib/nn: initialisation statistics, parameter names and counts, all-or-nothing state
 * dict loading, and layer numerics against plain-JS loops and closed forms.
 * @module
 */
import { strict as assert } from "node:assert";
import {
  Generator,
  getBackend,
  nn,
  rand,
  randn,
  setBackend,
  type Tensor,
  tensor,
  tidy,
} from "../../mod.ts";
import { assertClose } from "../_helpers.ts";

setBackend("cpu");

function stats(a: Float32Array): { mean: number; variance: number; min: number; max: number } {
  let s = 0, min = Infinity, max = -Infinity;
  for (const v of a) {
    s += v;
    min = Math.min(min, v);
    max = Math.max(max, v);
  }
  const mean = s / a.length;
  let q = 0;
  for (const v of a) q += (v - mean) ** 2;
  return { mean, variance: q / a.length, min, max };
}

Deno.test("nn.Linear init is U(±1/√in) for weight and bias (bounds and variance b²/3)", async () => {
  const lin = new nn.Linear(64, 256, { seed: 0 });
  const b = 1 / 8;
  const w = stats(await lin.weight.data());
  assert.deepEqual([...lin.weight.shape], [256, 64]); // PyTorch layout [out, in]
  assert.ok(w.min >= -b && w.max < b, `weights within ±${b}: [${w.min}, ${w.max}]`);
  assert.ok(w.max > 0.99 * b && w.min < -0.99 * b, "the bound is reached (not a narrower law)");
  // 16384 draws: the sample variance of U(±b) has relative sd √(0.8/n) ≈ 0.7%; allow 4%.
  assert.ok(Math.abs(w.variance / (b * b / 3) - 1) < 0.04, `variance ${w.variance}`);
  assert.ok(Math.abs(w.mean) < 4 * b / Math.sqrt(3 * 16384), `mean ${w.mean}`);
  const bs = stats(await lin.bias!.data());
  assert.ok(bs.min >= -b && bs.max < b);
  lin.dispose();
});

Deno.test("nn.Embedding init is N(0, 1); LayerNorm init is ones/zeros or no parameters", async () => {
  const e = new nn.Embedding(64, 64, { seed: 1 });
  const s = stats(await e.weight.data());
  // 4096 draws: sd of the mean 1/64, of the variance √(2/4096) ≈ 0.022.
  assert.ok(Math.abs(s.mean) < 0.07, `mean ${s.mean}`);
  assert.ok(Math.abs(s.variance - 1) < 0.1, `variance ${s.variance}`);
  const ln = new nn.LayerNorm(5);
  assert.deepEqual([...await ln.weight!.data()], [1, 1, 1, 1, 1]);
  assert.deepEqual([...await ln.bias!.data()], [0, 0, 0, 0, 0]);
  assert.equal(new nn.LayerNorm(5, { elementwiseAffine: false }).numParameters(), 0);
  e.dispose();
  ln.dispose();
});

Deno.test("nn.Linear computes x·Wᵀ + b for inputs of rank 2 and 3, and names a bad input shape", async () => {
  const lin = new nn.Linear(3, 2, { seed: 2 });
  const W = await lin.weight.data(), B = await lin.bias!.data();
  const xd = await randn([2, 4, 3], { seed: 3 }).data();
  const y = await lin.forward(tensor(xd, [2, 4, 3])).data();
  const want = new Float32Array(16);
  for (let r = 0; r < 8; r++) {
    for (let o = 0; o < 2; o++) {
      let s = B[o]!;
      for (let i = 0; i < 3; i++) s += xd[r * 3 + i]! * W[o * 3 + i]!;
      want[r * 2 + o] = s;
    }
  }
  assertClose(y, want);
  assert.throws(() => lin.forward(tensor([1, 2], [1, 2])), (e: Error) => {
    return e instanceof RangeError && e.message.includes("[1, 2]") &&
      e.message.includes("last axis to be 3");
  });
  lin.dispose();
});

Deno.test("nn.MLP names follow nn.Sequential and the parameter count is Σ (in+1)·out", () => {
  const m = new nn.MLP([2, 16, 8, 1], "gelu", { seed: 0 });
  assert.deepEqual([...m.namedParameters().keys()], [
    "0.weight",
    "0.bias",
    "2.weight",
    "2.bias",
    "4.weight",
    "4.bias",
  ]);
  assert.equal(m.numParameters(), 3 * 16 + 17 * 8 + 9 * 1);
  assert.throws(() => new nn.MLP([2, 4], "swish"), /Unknown activation "swish"/);
  m.dispose();
});

Deno.test("nn.DiT block and model parameter names follow facebookresearch/DiT; counts match the closed form", () => {
  const blk = new nn.AdaLNZeroBlock(8, 2, { seed: 0 });
  assert.deepEqual([...blk.namedParameters().keys()], [
    "attn.qkv.weight",
    "attn.qkv.bias",
    "attn.proj.weight",
    "attn.proj.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
    "adaLN_modulation.1.weight",
    "adaLN_modulation.1.bias",
  ]);
  const D = 8;
  const blockCount = (3 * D * D + 3 * D) + (D * D + D) + (4 * D * D + 4 * D) + (4 * D * D + D) +
    (6 * D * D + 6 * D);
  assert.equal(blk.numParameters(), blockCount);
  blk.dispose();

  const H = 16, p = 2, C = 1, K = 3, depth = 2;
  const net = new nn.DiT({
    inputSize: 8,
    patchSize: p,
    inChannels: C,
    hiddenSize: H,
    depth,
    numHeads: 2,
    numClasses: K,
    seed: 1,
  });
  const names = [...net.namedParameters().keys()];
  for (
    const n of [
      "x_embedder.proj.weight",
      "x_embedder.proj.bias",
      "t_embedder.mlp.0.weight",
      "t_embedder.mlp.2.bias",
      "y_embedder.embedding_table.weight",
      "blocks.1.attn.qkv.weight",
      "blocks.0.adaLN_modulation.1.weight",
      "final_layer.linear.weight",
      "final_layer.adaLN_modulation.1.bias",
    ]
  ) assert.ok(names.includes(n), `missing ${n}`);
  assert.ok(!names.includes("pos_embed"), "pos_embed is a buffer, not trained");
  assert.ok("pos_embed" in net.stateDict(), "but it is in the state dict");
  const blockH = (3 * H * H + 3 * H) + (H * H + H) + (4 * H * H + 4 * H) + (4 * H * H + H) +
    (6 * H * H + 6 * H);
  const expected = (C * p * p * H + H) + (256 * H + H + H * H + H) + (K + 1) * H +
    depth * blockH + (H * p * p * C + p * p * C) + (H * 2 * H + 2 * H);
  assert.equal(net.numParameters(), expected);
  net.dispose();
});

Deno.test("nn.DiT init: zero adaLN and final layers make the output exactly 0", async () => {
  const net = new nn.DiT({
    inputSize: 4,
    patchSize: 2,
    inChannels: 2,
    hiddenSize: 8,
    depth: 1,
    numHeads: 2,
    numClasses: 2,
    seed: 3,
  });
  const v = net.forward(randn([3, 2, 4, 4], { seed: 4 }), tensor([0, 0.5, 1]), tensor([0, 1, 2]));
  assert.deepEqual([...v.shape], [3, 2, 4, 4]);
  assert.ok((await v.data()).every((x) => x === 0));
  const w = await net.namedParameters().get("blocks.0.adaLN_modulation.1.weight")!.data();
  assert.ok(w.every((x) => x === 0));
  net.dispose();
});

Deno.test("Module.loadStateDict names missing, unexpected and mis-shaped tensors and assigns nothing on failure", async () => {
  const m = new nn.MLP([2, 3, 1], "relu", { seed: 0 });
  const before = await Promise.all(m.parameters().map((p) => p.data()));
  const good = () => ({
    "0.weight": { shape: [3, 2], data: new Float32Array(6).fill(7) },
    "0.bias": { shape: [3], data: new Float32Array(3).fill(7) },
    "2.weight": { shape: [1, 3], data: new Float32Array(3).fill(7) },
    "2.bias": { shape: [1], data: new Float32Array(1).fill(7) },
  });
  const missing: Record<string, { shape: number[]; data: Float32Array }> = good();
  delete missing["2.bias"];
  assert.throws(() => m.loadStateDict(missing), (e: Error) => {
    return e instanceof RangeError && e.message.includes(`missing "2.bias"`);
  });
  assert.throws(
    () => m.loadStateDict({ ...good(), "3.weight": { shape: [1], data: new Float32Array(1) } }),
    (e: Error) => e instanceof RangeError && e.message.includes(`unexpected "3.weight"`),
  );
  const bad = good();
  bad["2.weight"] = { shape: [3, 1], data: new Float32Array(3) };
  assert.throws(() => m.loadStateDict(bad), (e: Error) => {
    return e instanceof RangeError && e.message.includes(`"2.weight"`) &&
      e.message.includes("[3, 1]") && e.message.includes("[1, 3]");
  });
  assert.throws(
    () => m.loadStateDict({ ...good(), "0.bias": [1, 2, 3] as unknown as Tensor }),
    TypeError,
  );
  // "0.weight" came first and was valid each time, yet nothing was assigned.
  const after = await Promise.all(m.parameters().map((p) => p.data()));
  after.forEach((a, i) => assert.deepEqual([...a], [...before[i]!]));
  // Non-strict loads the names present and ignores the rest.
  m.loadStateDict({ "0.bias": good()["0.bias"], extra: good()["2.bias"] }, { strict: false });
  assert.deepEqual([...await m.parameters()[1]!.data()], [7, 7, 7]);
  m.loadStateDict(good());
  assert.deepEqual([...await m.parameters()[3]!.data()], [7]);
  // Tensors are copied, not adopted: disposing the source leaves the module intact.
  const src = tensor([1, 2, 3]);
  m.loadStateDict({ "0.bias": src }, { strict: false });
  src.dispose();
  assert.deepEqual([...await m.parameters()[1]!.data()], [1, 2, 3]);
  m.dispose();
});

Deno.test("nn.patchify matches a plain-JS patch layout and unpatchify inverts it", async () => {
  const [N, C, H, W, p] = [2, 3, 4, 6, 2];
  const xd = await randn([N, C, H, W], { seed: 5 }).data();
  const x = tensor(xd, [N, C, H, W]);
  const pt = nn.patchify(x, p);
  assert.deepEqual([...pt.shape], [N, (H / p) * (W / p), p * p * C]);
  const got = await pt.data();
  const gw = W / p;
  for (let n = 0; n < N; n++) {
    for (let gi = 0; gi < H / p; gi++) {
      for (let gj = 0; gj < gw; gj++) {
        for (let a = 0; a < p; a++) {
          for (let b = 0; b < p; b++) {
            for (let c = 0; c < C; c++) {
              const tok = gi * gw + gj, f = (a * p + b) * C + c;
              const want = xd[((n * C + c) * H + gi * p + a) * W + gj * p + b]!;
              assert.equal(got[(n * (H / p) * gw + tok) * p * p * C + f], want);
            }
          }
        }
      }
    }
  }
  const back = nn.unpatchify(pt, p, C, H / p);
  assert.deepEqual([...back.shape], [N, C, H, W]);
  assert.deepEqual([...await back.data()], [...xd]);
  assert.throws(() => nn.patchify(x, 4), /divisible by 4/);
});

Deno.test("nn.Conv2d (stride 2, padding 1) matches a direct plain-JS convolution", async () => {
  const [N, C, H, W, O, k, s, pd] = [2, 3, 7, 6, 4, 3, 2, 1];
  const conv = new nn.Conv2d(C, O, k, { stride: s, padding: pd, seed: 6 });
  const w = await conv.weight.data(), b = await conv.bias!.data();
  const xd = await randn([N, C, H, W], { seed: 7 }).data();
  const y = conv.forward(tensor(xd, [N, C, H, W]));
  const Ho = Math.floor((H + 2 * pd - k) / s) + 1, Wo = Math.floor((W + 2 * pd - k) / s) + 1;
  assert.deepEqual([...y.shape], [N, O, Ho, Wo]);
  const want = new Float32Array(N * O * Ho * Wo);
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < O; o++) {
      for (let i = 0; i < Ho; i++) {
        for (let j = 0; j < Wo; j++) {
          let acc = b[o]!;
          for (let c = 0; c < C; c++) {
            for (let ki = 0; ki < k; ki++) {
              for (let kj = 0; kj < k; kj++) {
                const r = i * s + ki - pd, q = j * s + kj - pd;
                if (r < 0 || r >= H || q < 0 || q >= W) continue;
                acc += xd[((n * C + c) * H + r) * W + q]! * w[((o * C + c) * k + ki) * k + kj]!;
              }
            }
          }
          want[((n * O + o) * Ho + i) * Wo + j] = acc;
        }
      }
    }
  }
  assertClose(await y.data(), want, { rtol: 1e-5, atol: 1e-6 });
  conv.dispose();
});

Deno.test("nn.MultiheadSelfAttention matches plain-JS softmax(QKᵀ/√d)V per head", async () => {
  const [B, N, D, Hh] = [2, 4, 6, 3];
  const hd = D / Hh;
  const attn = new nn.MultiheadSelfAttention(D, Hh, { seed: 8 });
  const Wq = await attn.qkv.weight.data(), bq = await attn.qkv.bias!.data();
  const Wp = await attn.proj.weight.data(), bp = await attn.proj.bias!.data();
  const xd = await randn([B, N, D], { seed: 9 }).data();
  const lin = (x: ArrayLike<number>, W: Float32Array, b: Float32Array, o: number, i: number) => {
    const y = new Float64Array(o);
    for (let r = 0; r < o; r++) {
      let s = b[r]!;
      for (let c = 0; c < i; c++) s += x[c]! * W[r * i + c]!;
      y[r] = s;
    }
    return y;
  };
  const want = new Float32Array(B * N * D);
  for (let bb = 0; bb < B; bb++) {
    const qkv = Array.from(
      { length: N },
      (_, n) => lin(xd.subarray((bb * N + n) * D, (bb * N + n + 1) * D), Wq, bq, 3 * D, D),
    );
    const heads = Array.from({ length: N }, () => new Float64Array(D));
    for (let h = 0; h < Hh; h++) {
      for (let i = 0; i < N; i++) {
        const logits = Array.from({ length: N }, (_, j) => {
          let s = 0;
          for (let e = 0; e < hd; e++) s += qkv[i]![h * hd + e]! * qkv[j]![D + h * hd + e]!;
          return s / Math.sqrt(hd);
        });
        const m = Math.max(...logits);
        const ex = logits.map((l) => Math.exp(l - m));
        const z = ex.reduce((a, c) => a + c, 0);
        for (let e = 0; e < hd; e++) {
          let s = 0;
          for (let j = 0; j < N; j++) s += (ex[j]! / z) * qkv[j]![2 * D + h * hd + e]!;
          heads[i]![h * hd + e] = s;
        }
      }
    }
    for (let i = 0; i < N; i++) want.set(lin(heads[i]!, Wp, bp, D, D), (bb * N + i) * D);
  }
  const y = attn.forward(tensor(xd, [B, N, D]));
  assertClose(await y.data(), want, { rtol: 1e-5, atol: 2e-6 });
  assert.throws(() => new nn.MultiheadSelfAttention(6, 4), /divisible by numHeads 4/);
  attn.dispose();
});

Deno.test("nn.timestepEmbedding equals [cos(t·f), sin(t·f)] with f_i = exp(−ln(10000)·i/half)", async () => {
  const ts = [0, 0.25, 0.5, 1, 3.5];
  const dim = 9; // odd: a zero column is appended
  const e = await nn.timestepEmbedding(tensor(ts), dim).data();
  const half = 4;
  for (let r = 0; r < ts.length; r++) {
    for (let i = 0; i < half; i++) {
      const a = ts[r]! * Math.exp(-Math.log(10000) * i / half);
      assert.ok(Math.abs(e[r * dim + i]! - Math.cos(a)) < 1e-6);
      assert.ok(Math.abs(e[r * dim + half + i]! - Math.sin(a)) < 1e-6);
    }
    assert.equal(e[r * dim + 8], 0);
  }
  // StableVM's toy variant: base 1000, t scaled by 2π, [sin, cos].
  const s = await nn.timestepEmbedding(tensor([0.3]), 4, {
    maxPeriod: 1000,
    scale: 2 * Math.PI,
    order: "sin_cos",
  }).data();
  const f1 = 2 * Math.PI * 0.3 * Math.exp(-Math.log(1000) / 2);
  assertClose(s, [
    Math.sin(2 * Math.PI * 0.3),
    Math.sin(f1),
    Math.cos(2 * Math.PI * 0.3),
    Math.cos(f1),
  ], {
    atol: 1e-6,
  });
});

Deno.test("nn.LabelEmbedder drops labels per sample at rate p in training, never in eval, and honours forceDrop", async () => {
  const K = 10, n = 20000, p = 0.1;
  const le = new nn.LabelEmbedder(K, 4, p, { seed: 0 });
  assert.deepEqual([...le.embeddingTable.weight.shape], [K + 1, 4]);
  const labels = tensor(Float32Array.from({ length: n }, (_, i) => i % K));
  const dropped = await le.tokenDrop(labels).data();
  let count = 0;
  for (let i = 0; i < n; i++) {
    if (dropped[i] === K) count++;
    else assert.equal(dropped[i], i % K);
  }
  // Binomial(20000, 0.1): sd 42 drops; accept ±5 sd.
  assert.ok(Math.abs(count - n * p) < 5 * Math.sqrt(n * p * (1 - p)), `dropped ${count}`);
  // A second draw differs (per-sample randomness, not a fixed mask).
  const again = await le.tokenDrop(labels).data();
  assert.ok(again.some((v, i) => v !== dropped[i]));
  // Eval mode: embeddings are the table rows of the given labels.
  le.eval();
  const tbl = await le.embeddingTable.weight.data();
  const e = await le.forward(tensor([3, K])).data();
  assert.deepEqual([...e], [...tbl.subarray(12, 16), ...tbl.subarray(40, 44)]);
  const f = await le.forward(tensor([3, 4]), tensor([1, 0])).data();
  assert.deepEqual([...f], [...tbl.subarray(40, 44), ...tbl.subarray(16, 20)]);
  le.dispose();
});

Deno.test("nn.Dropout keeps entries with probability 1 − p scaled by 1/(1 − p); eval is the identity", async () => {
  const d = new nn.Dropout(0.25, { generator: new Generator(11) });
  const x = tensor(new Float32Array(8000).fill(1));
  const y = await d.forward(x).data();
  let kept = 0;
  for (const v of y) {
    if (v !== 0) {
      assert.ok(Math.abs(v - 4 / 3) < 1e-6);
      kept++;
    }
  }
  assert.ok(Math.abs(kept / 8000 - 0.75) < 5 * Math.sqrt(0.1875 / 8000), `kept ${kept}`);
  d.eval();
  assert.equal(d.forward(x), x);
  assert.throws(() => new nn.Dropout(1.5), RangeError);
});

Deno.test("nn activations: geluTanh and selu equal their closed forms; train()/eval() reach every submodule", async () => {
  const xs = [-3, -1, -0.2, 0, 0.5, 2];
  const g = await nn.geluTanh(tensor(xs)).data();
  const s = await nn.selu(tensor(xs)).data();
  xs.forEach((x, i) => {
    const gt = 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
    assert.ok(Math.abs(g[i]! - gt) < 2e-6);
    const st = 1.0507009873554805 * (x > 0 ? x : 1.6732632423543772 * (Math.exp(x) - 1));
    assert.ok(Math.abs(s[i]! - st) < 2e-6);
  });
  const net = new nn.AdaLNMLP({ dim: 2, seed: 0 });
  net.eval();
  for (const m of net.namedModules().values()) assert.equal(m.training, false);
  net.train();
  for (const m of net.namedModules().values()) assert.equal(m.training, true);
  net.dispose();
});

Deno.test("nn.AdaLNMLP has StableVM ScoreNet's names, and its zero-init modulation ignores the class at init", async () => {
  const net = new nn.AdaLNMLP({ dim: 2, numClasses: 3, seed: 1 });
  const names = [...net.namedParameters().keys()];
  assert.deepEqual(names.slice(0, 8), [
    "input_layer.weight",
    "input_layer.bias",
    "blocks.0.0.norm.weight",
    "blocks.0.0.norm.bias",
    "blocks.0.0.fc.weight",
    "blocks.0.0.fc.bias",
    "blocks.0.1.weight",
    "blocks.0.1.bias",
  ]);
  assert.ok(names.includes("output_layer.weight") && names.includes("blocks.3.1.bias"));
  // 4 blocks of 32: input (2+32+1)·32, per block LN 64 + fc (32+1)·64 + linear 33·32, out 33·2,
  // labels 4·32 (3 classes + null).
  assert.equal(net.numParameters(), 35 * 32 + 4 * (64 + 33 * 64 + 33 * 32) + 33 * 2 + 4 * 32);
  net.eval();
  const x = randn([4, 2], { seed: 2 }), t = rand([4], { seed: 3 });
  const a = await net.forward(x, t, tensor([0, 1, 2, 3])).data();
  const b = await net.forward(x, t, tensor([2, 2, 0, 1])).data();
  assert.deepEqual([...a], [...b]);
  net.dispose();
});

Deno.test("nn.VelocityMLP is [x, t] → hidden layers → v, and class labels change the output", async () => {
  const net = new nn.VelocityMLP({ dim: 2, hidden: 8, depth: 3, numClasses: 2, seed: 4 });
  assert.deepEqual(
    [...net.namedParameters().keys()],
    [
      "net.0.weight",
      "net.0.bias",
      "net.2.weight",
      "net.2.bias",
      "net.4.weight",
      "net.4.bias",
      "net.6.weight",
      "net.6.bias",
      "y_embedder.embedding_table.weight",
    ],
  );
  assert.deepEqual([...net.namedParameters().get("net.0.weight")!.shape], [8, 3]);
  net.eval();
  const x = randn([3, 2], { seed: 5 }), t = tensor([0.1, 0.5, 0.9]);
  const v0 = await net.forward(x, t, tensor([0, 0, 0])).data();
  const v1 = await net.forward(x, t, tensor([1, 1, 1])).data();
  assert.ok(v0.some((v, i) => v !== v1[i]));
  // Omitting y means the null class (index numClasses), the CFG unconditional branch.
  const vn = await net.forward(x, t, tensor([2, 2, 2])).data();
  assert.deepEqual([...await net.forward(x, t).data()], [...vn]);
  // Unconditional call: a plain MLP of [x, t] — recompute by hand from the weights.
  const plain = new nn.VelocityMLP({ dim: 2, hidden: 4, depth: 1, activation: "tanh", seed: 6 });
  const [W0, b0, W1, b1] = await Promise.all(plain.parameters().map((p) => p.data()));
  const xd = await x.data(), td = [0.1, 0.5, 0.9];
  const got = await plain.forward(x, t).data();
  for (let r = 0; r < 3; r++) {
    const inp = [xd[2 * r]!, xd[2 * r + 1]!, td[r]!];
    const h = Array.from({ length: 4 }, (_, o) => {
      return Math.tanh(b0![o]! + inp.reduce((a, v, i) => a + v * W0![o * 3 + i]!, 0));
    });
    for (let o = 0; o < 2; o++) {
      const want = b1![o]! + h.reduce((a, v, i) => a + v * W1![o * 4 + i]!, 0);
      assert.ok(Math.abs(got[2 * r + o]! - want) < 1e-5);
    }
  }
  assert.throws(() => net.forward(randn([3, 3]), t), /Expected x of shape \[B, 2\]/);
  net.dispose();
  plain.dispose();
});

Deno.test("nn forward passes inside tidy leave no live tensors besides the parameters", () => {
  const be = getBackend();
  const net = new nn.DiT({
    inputSize: 4,
    patchSize: 2,
    inChannels: 1,
    hiddenSize: 8,
    depth: 1,
    numHeads: 2,
    numClasses: 2,
    seed: 0,
  });
  const x = randn([2, 1, 4, 4], { seed: 1 });
  tidy(() => net.forward(x, tensor([0.1, 0.2]), tensor([0, 1]))).dispose(); // warms index caches
  const base = be.liveBytes();
  for (let i = 0; i < 3; i++) {
    tidy(() => net.forward(x, tensor([0.1, 0.2]), tensor([0, 1]))).dispose();
  }
  assert.equal(be.liveBytes(), base);
  net.dispose();
  x.dispose();
});
