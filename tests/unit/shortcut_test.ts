/**
 * Tests for lib/flow/shortcut.ts and lib/flow/anchors.ts (shortcut bootstrap targets, the
 * anchor and locality terms, few-step sampling, anchors), the step-size conditioning of the
 * networks, and lib/io/cluster_dir.ts, against hand computations and plain-JS loops.
 */
import { strict as assert } from "node:assert";
import {
  bootstrapDtBase,
  Generator,
  keep,
  labelAnchors,
  loadClusterDir,
  nearestCentroid,
  nn,
  optim,
  randn,
  saveNpy,
  SHORTCUT_EPS,
  shortcutDtBase,
  shortcutLoss,
  shortcutSample,
  shortcutTargets,
  type ShortcutVelocityFn,
  sliceRows,
  type Tensor,
  tensor,
  valueAndGrad,
} from "../../mod.ts";
import { assertClose } from "../_helpers.ts";

const EPS = SHORTCUT_EPS;

function mlp(seed: number, dt = true): nn.VelocityMLP {
  return new nn.VelocityMLP({ dim: 2, hidden: 16, depth: 2, dtConditioning: dt, seed });
}
const fnOf = (m: nn.VelocityMLP): ShortcutVelocityFn => (x, t, d, y) => m.forward(x, t, y, d);

Deno.test("bootstrapDtBase lays out SC's step sizes: K−1 … 0, ⌊Bb/K⌋ each, zero padding", () => {
  const d = bootstrapDtBase(32, 128); // B = 256, bootstrap_every = 8
  const want = [6, 5, 4, 3, 2, 1, 0].flatMap((k) => [k, k, k, k]).concat([0, 0, 0, 0]);
  assert.deepEqual([...d], want);
  assert.deepEqual([...bootstrapDtBase(4, 128)], [0, 0, 0, 0]); // Bb < K: all d = 1, as SC
  assert.throws(() => bootstrapDtBase(4, 100), /power of two/);
});

Deno.test("shortcutTargets: discrete time grid, flow rows' target and path, dtBase", async () => {
  const B = 64, x1 = randn([B, 2], { seed: 1 }), x0 = randn([B, 2], { seed: 2 });
  const teacher = (x: Tensor) => x.mul(0);
  const b = shortcutTargets(teacher, x1, { x0, generator: new Generator(3) });
  assert.equal(b.numBootstrap, 8);
  const [t, dt, xt, tg, a0, a1] = await Promise.all(
    [b.t, b.dtBase, b.xt, b.target, x0, x1].map((u) => u.data()),
  );
  for (let i = 0; i < B; i++) {
    const k = dt[i]!;
    if (i < 8) {
      assert.equal(k, bootstrapDtBase(8)[i]);
      const s = t[i]! * 2 ** k;
      assert.ok(Number.isInteger(Math.round(s * 1e4) / 1e4) && s >= 0 && s < 2 ** k, `t ${t[i]}`);
    } else {
      assert.equal(k, 7);
      const s = t[i]! * 128;
      assert.ok(Math.abs(s - Math.round(s)) < 1e-4 && s >= 0 && s < 128);
      for (let j = 0; j < 2; j++) {
        const o = 2 * i + j;
        assertClose([tg[o]!], [a1[o]! - (1 - EPS) * a0[o]!], { atol: 1e-6 });
      }
    }
    for (let j = 0; j < 2; j++) {
      const o = 2 * i + j;
      assertClose([xt[o]!], [(1 - (1 - EPS) * t[i]!) * a0[o]! + t[i]! * a1[o]!], { atol: 1e-6 });
    }
  }
});

Deno.test("bootstrap targets equal two explicit half-steps of the EMA model", async () => {
  const online = mlp(0);
  const ema = new optim.EMA(online, { decay: 0.5, warmup: false });
  // A few large SGD steps with EMA updates, so the EMA weights differ from the online ones.
  const opt = new optim.SGD({ lr: 0.5 });
  const xs = randn([16, 2], { seed: 9 }), ts = tensor(new Float32Array(16).fill(0.5));
  const ks = tensor(new Float32Array(16).fill(2));
  for (let i = 0; i < 3; i++) {
    const [, g] = valueAndGrad((_p: Tensor[]) =>
      online.forward(xs, ts, undefined, ks).sub(1).square().mean()
    )(
      online.parameters(),
    );
    opt.step(online.parameters(), g);
    ema.update(online);
  }
  const teacherNet = mlp(5);
  ema.copyTo(teacherNet);
  const B = 64, x1 = randn([B, 2], { seed: 11 }).mul(3);
  const b = shortcutTargets(fnOf(teacherNet), x1, { generator: new Generator(12) });
  const Bb = b.numBootstrap;
  const [xt, t, dt, target] = await Promise.all(
    [b.xt, b.t, b.dtBase, b.target].map((u) => u.data()),
  );
  // By hand: v1 = T(x_t, t, k+1); x' = clip(x_t + d/2·v1, ±4); v2 = T(x', t + d/2, k+1).
  const rows = (a: Float32Array) => tensor(a.slice(0, 2 * Bb), [Bb, 2]);
  const tb = tensor(t.slice(0, Bb), [Bb]), kb = tensor(dt.slice(0, Bb).map((k) => k + 1), [Bb]);
  const v1 = await teacherNet.forward(rows(xt), tb, undefined, kb).data();
  const x2 = new Float32Array(2 * Bb), t2 = new Float32Array(Bb);
  const clip = (v: number) => Math.min(4, Math.max(-4, v));
  for (let i = 0; i < Bb; i++) {
    const h = 2 ** -dt[i]! / 2;
    t2[i] = t[i]! + h;
    for (let j = 0; j < 2; j++) x2[2 * i + j] = clip(xt[2 * i + j]! + h * v1[2 * i + j]!);
  }
  const v2 = await teacherNet.forward(tensor(x2, [Bb, 2]), tensor(t2, [Bb]), undefined, kb).data();
  const want = Array.from({ length: 2 * Bb }, (_, o) => clip((v1[o]! + v2[o]!) / 2));
  assertClose(target.slice(0, 2 * Bb), want, { atol: 1e-5, rtol: 1e-4 });
  // The online network gives other targets: the test tells the two apart.
  const b2 = shortcutTargets(fnOf(online), x1, { generator: new Generator(12) });
  const other = (await b2.target.data()).slice(0, 2 * Bb);
  assert.ok(other.some((v, i) => Math.abs(v - want[i]!) > 1e-3));
});

Deno.test("bootstrap targets and the intermediate point are clipped to ±4", async () => {
  const huge = (x: Tensor) => x.mul(0).add(100);
  const b = shortcutTargets(huge, randn([16, 2], { seed: 0 }), { generator: new Generator(0) });
  assert.deepEqual([...(await b.target.data()).slice(0, 4)], [4, 4, 4, 4]);
});

Deno.test("bootstrapCfg guides the first ⌊Bb/K⌋ bootstrap rows with the null label", async () => {
  // v = 0.1·y: conditional 0.8 (y = 8), unconditional 1.0 (null = 10); s = 4 → 0.2.
  const teacher: ShortcutVelocityFn = (x, _t, _d, y) => x.mul(0).add(y!.reshape([-1, 1]).mul(0.1));
  const B = 128, Bb = 16, per = Math.floor(Bb / 7);
  const b = shortcutTargets(teacher, randn([B, 2], { seed: 0 }), {
    y: tensor(new Float32Array(B).fill(8)),
    numClasses: 10,
    bootstrapCfg: true,
    cfgScale: 4,
    generator: new Generator(1),
  });
  const tg = await b.target.data();
  for (let i = 0; i < Bb; i++) assertClose([tg[2 * i]!], [i < per ? 0.2 : 0.8], { atol: 1e-6 });
  assert.throws(() => shortcutTargets(teacher, randn([8, 2]), { bootstrapCfg: true }), TypeError);
});

Deno.test("bootstrap teachers are detached: the online model as teacher adds no gradient", () => {
  const m = mlp(3), f = fnOf(m);
  const x1 = randn([32, 2], { seed: 4 }), x0 = randn([32, 2], { seed: 5 });
  const mk = () => shortcutTargets(f, x1, { x0, generator: new Generator(6) });
  const inside = valueAndGrad((_p: Tensor[]) => shortcutLoss(f, mk()).loss)(m.parameters())[1];
  const outsideBatch = mk();
  const outside =
    valueAndGrad((_p: Tensor[]) => shortcutLoss(f, outsideBatch).loss)(m.parameters())[1];
  return Promise.all(inside.map(async (g, i) => {
    assertClose(await g.data(), await outside[i]!.data(), { atol: 1e-6, rtol: 1e-5 });
  })).then(() => undefined);
});

Deno.test("anchor term: zero when e(x1) = x1, positive otherwise, gradients through both sides", async () => {
  const m = mlp(7), f = fnOf(m);
  const x1 = randn([32, 2], { seed: 8 });
  const b = shortcutTargets(f, x1, { generator: new Generator(9) });
  const flow = sliceRows(x1, b.numBootstrap, 32);
  const same = shortcutLoss(f, b, { anchor: { anchors: flow } });
  assert.equal(await same.lossAnchor!.item(), 0);
  assertClose([await same.loss.item()], [await shortcutLoss(f, b).loss.item()], { atol: 1e-7 });
  const shifted = flow.add(1.5);
  const r = shortcutLoss(f, b, { anchor: { anchors: shifted, weight: 2 } });
  const la = await r.lossAnchor!.item();
  assert.ok(la > 0);
  assertClose([await r.loss.item()], [await shortcutLoss(f, b).loss.item() + 2 * la], {
    rtol: 1e-5,
  });
  // Masked: no valid row → 0 anchor loss and ratio 0.
  const none = shortcutLoss(f, b, {
    anchor: { anchors: shifted, valid: tensor(new Float32Array(28)) },
  });
  assert.equal(await none.lossAnchor!.item(), 0);
  assert.equal(await none.anchorValidRatio!.item(), 0);
  // Gradients flow through both sides, as LFM: the same as a hand-built loss on
  // [v(x_t) − v(e(x1)_t)]², and not the one with the anchor side detached.
  const Bb = b.numBootstrap, Bf = 32 - Bb;
  const tF = sliceRows(b.t, Bb, 32), dF = sliceRows(b.dtBase, Bb, 32);
  const x0F = sliceRows(b.x0, Bb, 32);
  const tb = tF.reshape([Bf, 1]);
  const ax = x0F.mul(tb.mul(-(1 - EPS)).add(1)).add(shifted.mul(tb));
  const xF = sliceRows(b.xt, Bb, 32);
  const grads = (detach: boolean) =>
    valueAndGrad((_p: Tensor[]) => {
      const va = f(ax, tF, dF);
      return f(xF, tF, dF).sub(detach ? va.detach() : va).square().mean();
    })(m.parameters())[1];
  const gLib =
    valueAndGrad((_p: Tensor[]) =>
      shortcutLoss(f, b, { anchor: { anchors: shifted } }).lossAnchor!
    )(
      m.parameters(),
    )[1];
  const [gBoth, gHalf] = [grads(false), grads(true)];
  let differs = false;
  for (let i = 0; i < gLib.length; i++) {
    const [l, h, o] = await Promise.all([gLib[i]!.data(), gBoth[i]!.data(), gHalf[i]!.data()]);
    assertClose(l, h, { atol: 1e-6, rtol: 1e-4 });
    differs ||= l.some((v, j) => Math.abs(v - o[j]!) > 1e-6);
  }
  assert.ok(differs);
});

Deno.test("locality term: zero with noise scale 0, positive otherwise; target diff ≈ σ²", async () => {
  const m = mlp(10), f = fnOf(m);
  const b = shortcutTargets(f, randn([64, 2], { seed: 11 }), { generator: new Generator(12) });
  const z = shortcutLoss(f, b, { locality: { noiseScale: 0, generator: new Generator(1) } });
  assert.equal(await z.lossLocality!.item(), 0);
  assert.equal(await z.localityTargetDiff!.item(), 0);
  const noise = randn([56, 2], { seed: 13 });
  const r = shortcutLoss(f, b, { locality: { noiseScale: 0.1, weight: 3, noise } });
  const ll = await r.lossLocality!.item();
  assert.ok(ll > 0);
  assertClose([await r.loss.item()], [await shortcutLoss(f, b).loss.item() + 3 * ll], {
    rtol: 1e-5,
  });
  const e2 = await noise.square().mean().item();
  assertClose([await r.localityTargetDiff!.item()], [0.01 * (1 - EPS) ** 2 * e2], { rtol: 1e-4 });
});

Deno.test("locality pairs share t: u_t and s_t go to the model with the same t and dtBase", async () => {
  const calls: { x: Tensor; t: Tensor; d: Tensor }[] = [];
  const spy: ShortcutVelocityFn = (x, t, d) => {
    calls.push({ x: keep(x.add(0)), t: keep(t.add(0)), d: keep(d.add(0)) });
    return x.mul(0.3);
  };
  const B = 32, x1 = randn([B, 2], { seed: 1 }), x0 = randn([B, 2], { seed: 2 });
  const b = shortcutTargets((x) => x.mul(0), x1, { x0, generator: new Generator(3) });
  const Bb = b.numBootstrap, Bf = B - Bb;
  const noise = randn([Bf, 2], { seed: 4 });
  shortcutLoss(spy, b, { locality: { noiseScale: 0.5, noise } });
  assert.equal(calls.length, 1); // one batched call on [x_t; s_t]
  const c = calls[0]!;
  const [xs, ts, ds] = await Promise.all([c.x, c.t, c.d].map((u) => u.data()));
  assert.equal(ts.length, B + Bf);
  const e = await noise.data();
  for (let i = 0; i < Bf; i++) {
    const u = Bb + i, s = B + i;
    assert.equal(ts[s], ts[u], `row ${i}: t of s_t ${ts[s]} vs u_t ${ts[u]}`);
    assert.equal(ds[s], ds[u]);
    const tt = ts[u]!;
    for (let j = 0; j < 2; j++) {
      // s_t − u_t = (1 − (1 − ε)t)·(x0' − x0) = (1 − (1 − ε)t)·σ·ε_noise at the shared t.
      assertClose([xs[2 * s + j]! - xs[2 * u + j]!], [(1 - (1 - EPS) * tt) * 0.5 * e[2 * i + j]!], {
        atol: 1e-5,
      });
    }
  }
});

Deno.test("labelAnchors: class means of the batch, valid for classes of ≥ 2, null label invalid", async () => {
  const N = 40, K = 5, gen = new Generator(0);
  const x = randn([N, 3], { generator: gen });
  const lab = Float32Array.from({ length: N }, (_, i) => (i === 7 ? 5 : i === 3 ? 4 : i % 4));
  const { anchors, valid } = labelAnchors(x, tensor(lab), K);
  const xs = await x.data(), an = await anchors.data(), va = await valid.data();
  for (let i = 0; i < N; i++) {
    const members = [...lab.keys()].filter((j) => lab[j] === lab[i] && lab[i]! < K);
    assert.equal(va[i], members.length >= 2 ? 1 : 0, `row ${i}`);
    for (let d = 0; d < 3; d++) {
      const want = members.length >= 2
        ? members.reduce((s, j) => s + xs[3 * j + d]!, 0) / members.length
        : xs[3 * i + d]!;
      assertClose([an[3 * i + d]!], [want], { atol: 1e-5 });
    }
  }
});

Deno.test("nearestCentroid matches a brute-force search", async () => {
  const N = 200, K = 13, D = 5, gen = new Generator(1);
  const x = randn([N, D], { generator: gen }), c = randn([K, D], { generator: gen }).mul(1.5);
  const r = nearestCentroid(x, c);
  const [xs, cs, idx, dist, an] = await Promise.all(
    [x, c, r.index, r.distance, r.anchors].map((u) => u.data()),
  );
  const used = new Set<number>();
  for (let i = 0; i < N; i++) {
    let best = -1, bd = Infinity;
    for (let k = 0; k < K; k++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += (xs[i * D + d]! - cs[k * D + d]!) ** 2;
      if (s < bd) [best, bd] = [k, s];
    }
    assert.equal(idx[i], best, `row ${i}`);
    assertClose([dist[i]!], [bd], { rtol: 1e-4, atol: 1e-5 });
    assertClose(an.slice(i * D, i * D + D), cs.slice(best * D, best * D + D));
    used.add(best);
  }
  assert.equal(await r.used.item(), used.size);
  assert.throws(() => nearestCentroid(x, randn([3, 4])), RangeError);
});

Deno.test("shortcut sampling: N Euler steps at dtBase = log2 N; non-powers of two refused", async () => {
  assert.equal(shortcutDtBase(1), 0);
  assert.equal(shortcutDtBase(128), 7);
  assert.throws(() => shortcutDtBase(3), /power of two in \[1, 128\].*found 3/);
  assert.throws(() => shortcutDtBase(256), RangeError);
  const seen: number[] = [];
  const v: ShortcutVelocityFn = (x, _t, d) => {
    seen.push(d.size);
    return x.mul(0).add(1);
  };
  const r = await shortcutSample(v, randn([5, 2], { seed: 0 }).mul(0), 8, { record: true });
  assert.equal(r.nfe, 8);
  assert.equal(r.trajectory!.length, 9);
  assertClose(await r.x.data(), new Array(10).fill(1), { atol: 1e-6 });
  await assert.rejects(shortcutSample(v, randn([5, 2]), 6), RangeError);
});

Deno.test("dt conditioning leaves the other parameters' initial values unchanged", async () => {
  const a = mlp(3, false), b = mlp(3, true);
  const sa = a.stateDict(), sb = b.stateDict();
  for (const [k, t] of Object.entries(sa)) {
    assert.deepEqual([...await (t as Tensor).data()], [...await (sb[k] as Tensor).data()], k);
  }
  assert.ok(Object.keys(sb).some((k) => k.startsWith("dt_embedder.")));
  const x = randn([3, 2], { seed: 0 }), t = tensor([0.1, 0.5, 0.9]);
  assert.throws(() => b.forward(x, t), /step-conditioned/);
  assert.throws(() => a.forward(x, t, undefined, tensor([1, 1, 1])), TypeError);
  // A different dtBase changes the output.
  const o1 = await b.forward(x, t, undefined, tensor([0, 0, 0])).data();
  const o2 = await b.forward(x, t, undefined, tensor([7, 7, 7])).data();
  assert.ok(o1.some((v, i) => Math.abs(v - o2[i]!) > 1e-6));
  const opts = {
    inputSize: 4,
    patchSize: 2,
    inChannels: 1,
    hiddenSize: 8,
    depth: 1,
    numHeads: 2,
    numClasses: 0,
    seed: 1,
  };
  const d0 = new nn.DiT(opts), d1 = new nn.DiT({ ...opts, dtConditioning: true });
  const s0 = d0.stateDict(), s1 = d1.stateDict();
  for (const [k, v] of Object.entries(s0)) {
    assert.deepEqual([...await (v as Tensor).data()], [...await (s1[k] as Tensor).data()], k);
  }
  const xi = randn([2, 1, 4, 4], { seed: 2 });
  const out = d1.forward(xi, tensor([0.2, 0.4]), undefined, undefined, tensor([3, 3]));
  assert.deepEqual(out.shape, [2, 1, 4, 4]);
  assert.throws(() => d1.forward(xi, tensor([0.2, 0.4])), TypeError);
});

Deno.test("loadClusterDir rejects missing files and mismatched shapes, naming them", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(loadClusterDir(`${dir}/nope`), /does not exist/);
    await assert.rejects(
      loadClusterDir(dir),
      /lacks cluster_centers.npy, latents.npy, assignments.csv/,
    );
    await saveNpy(`${dir}/cluster_centers.npy`, { shape: [2, 2], data: new Float32Array(4) });
    await saveNpy(`${dir}/latents.npy`, { shape: [3, 3], data: new Float32Array(9) });
    await assert.rejects(loadClusterDir(dir), /lacks assignments.csv/);
    await Deno.writeTextFile(`${dir}/assignments.csv`, "index,cluster\n0,0\n1,1\n2,0\n");
    await assert.rejects(loadClusterDir(dir), /shape \[N, 2\].*found \[3,3\]/);
    await saveNpy(`${dir}/latents.npy`, { shape: [3, 2], data: new Float32Array(6) });
    const ok = await loadClusterDir(dir, { dim: 2 });
    assert.equal(ok.numSamples, 3);
    await assert.rejects(
      loadClusterDir(dir, { numClusters: 4 }),
      /--num-clusters 4 to be at most the number of samples 3/,
    );
    await assert.rejects(loadClusterDir(dir, { numClusters: 3 }), /3 clusters.*holds 2/);
    await assert.rejects(loadClusterDir(dir, { dim: 784 }), /row size 784/);
    await Deno.writeTextFile(`${dir}/assignments.csv`, "index,cluster\n0,0\n1,1\n");
    await assert.rejects(loadClusterDir(dir), /3 rows.*found 2/);
    await Deno.writeTextFile(`${dir}/assignments.csv`, "index,cluster\n0,0\n1,5\n2,0\n");
    await assert.rejects(loadClusterDir(dir), /integer in \[0, 2\)/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("image VelocityMLP (784-D, labels + step size, input skip): embeddings added to the first hidden layer, v = f + c·x", async () => {
  const m = new nn.VelocityMLP({
    dim: 784,
    hidden: 16,
    depth: 2,
    numClasses: 10,
    dtConditioning: true,
    inputSkip: true,
    seed: 3,
  }).eval();
  const B = 4, x = randn([B, 784], { seed: 1 }), t = tensor([0, 0.25, 0.5, 0.9]);
  const y = tensor([0, 3, 9, 3]), d = tensor([0, 1, 3, 7]);
  const got = await m.forward(x, t, y, d).data();
  // By hand: h = W0·[x, t] + b0 + E[y] + dte(d); then SiLU, W1, SiLU, W2.
  const P = Object.fromEntries(
    await Promise.all([...m.namedParameters()].map(async ([k, p]) => [k, await p.data()])),
  ) as Record<string, Float32Array>;
  const dte = await m.dtEmbedder!.forward(d).data();
  const xd = await x.data(), td = await t.data(), yd = await y.data();
  const silu = (v: number) => v / (1 + Math.exp(-v));
  const lin = (W: Float32Array, b: Float32Array, inp: number[], out: number) =>
    Array.from({ length: out }, (_, o) => {
      let s = b[o]!;
      for (let i = 0; i < inp.length; i++) s += W[o * inp.length + i]! * inp[i]!;
      return s;
    });
  const E = P["y_embedder.embedding_table.weight"]!;
  for (let r = 0; r < B; r++) {
    const inp = [...xd.subarray(r * 784, (r + 1) * 784), td[r]!];
    const h0 = lin(P["net.0.weight"]!, P["net.0.bias"]!, inp, 16)
      .map((v, o) => v + E[yd[r]! * 16 + o]! + dte[r * 16 + o]!);
    const h1 = lin(P["net.2.weight"]!, P["net.2.bias"]!, h0.map(silu), 16);
    const out = lin(P["net.4.weight"]!, P["net.4.bias"]!, h1.map(silu), 785);
    const v = out.slice(0, 784).map((f, i) => f + out[784]! * xd[r * 784 + i]!);
    assertClose(got.subarray(r * 784, (r + 1) * 784), v, { atol: 2e-4, rtol: 1e-3 });
  }
  // Each conditioning input matters.
  const other = await m.forward(x, t, tensor([1, 3, 9, 3]), d).data();
  assert.ok(other.subarray(0, 784).some((v, i) => Math.abs(v - got[i]!) > 1e-5));
  assert.deepEqual([...other.subarray(784)], [...got.subarray(784)]);
  const otherD = await m.forward(x, t, y, tensor([5, 1, 3, 7])).data();
  assert.ok(otherD.subarray(0, 784).some((v, i) => Math.abs(v - got[i]!) > 1e-5));
});
