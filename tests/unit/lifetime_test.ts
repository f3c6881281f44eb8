/**
 * Tensor lifetimes on the CPU backend: `tidy`, nested scopes, `using`, `keep`, shared
 * storage of reshapes, use-after-dispose errors, and a 200-step training loop that must
 * return live bytes to baseline. Every check frees memory with dispose()/tidy, never GC.
 */
import { strict as assert } from "node:assert";
import * as fg from "../../mod.ts";
import type { Tensor } from "../../mod.ts";

fg.setBackend("cpu");
const live = () => fg.getBackend().liveBytes();

Deno.test("tidy frees intermediates and keeps the returned tensors (a tree of them)", async () => {
  const x = fg.tensor([1, 2, 3, 4]);
  const base = live();
  const y = fg.tidy(() => x.mul(2).add(1).exp());
  assert.equal(live() - base, 4 * 4, "only y survives");
  assertCloseArr(await y.data(), [3, 5, 7, 9].map(Math.exp));
  const tree = fg.tidy(() => {
    const a = x.mul(3);
    a.add(1); // dropped
    return { a, list: [x.sum(), x.neg()] };
  });
  assert.equal(live() - base, 4 * (4 + 4 + 1 + 4));
  assert.equal(await tree.list[0]!.item(), 10);
  y.dispose();
  fg.treeLeaves(tree).forEach((t) => t.dispose());
  assert.equal(live(), base);
  x.dispose();
});

function assertCloseArr(a: ArrayLike<number>, b: number[]) {
  for (let i = 0; i < b.length; i++) {
    assert.ok(Math.abs(a[i]! - b[i]!) <= 1e-5 * Math.abs(b[i]!), `${a[i]} vs ${b[i]}`);
  }
}

Deno.test("nested tidy: the inner result moves to the outer scope, which frees it", () => {
  const base = live();
  let inner: Tensor | undefined;
  const out = fg.tidy(() => {
    const a = fg.ones([8]);
    inner = fg.tidy(() => a.mul(2).add(3));
    assert.equal(inner.isDisposed, false);
    return inner.sum();
  });
  assert.equal(inner!.isDisposed, true, "the outer tidy frees the inner result it did not return");
  assert.equal(live() - base, 4);
  out.dispose();
  assert.equal(live(), base);
});

Deno.test("tidy disposes everything when fn throws, and rejects async functions", () => {
  const base = live();
  assert.throws(() =>
    fg.tidy(() => {
      fg.ones([100]);
      throw new Error("boom");
    }), /boom/);
  assert.equal(live(), base);
  // deno-lint-ignore require-await
  assert.throws(() => fg.tidy(async () => 1), TypeError);
});

Deno.test("keep() lets a tensor outlive its tidy scope", () => {
  const base = live();
  let k: Tensor | undefined;
  fg.tidy(() => {
    k = fg.keep(fg.ones([4]).mul(5));
    fg.ones([4]);
  });
  assert.equal(k!.isDisposed, false);
  assert.equal(live() - base, 16);
  k!.dispose();
  assert.equal(live(), base);
});

Deno.test("using frees a tensor at the end of its block", () => {
  const base = live();
  let ref: Tensor;
  {
    using t = fg.zeros([10]);
    ref = t;
    assert.equal(live() - base, 40);
  }
  assert.equal(ref.isDisposed, true);
  assert.equal(live(), base);
});

Deno.test("reshape shares storage: disposing one view keeps the other valid", async () => {
  const base = live();
  const a = fg.arange(6);
  const b = a.reshape([2, 3]);
  const c = fg.stopGradient(b);
  assert.equal(live() - base, 24, "views do not copy");
  a.dispose();
  assert.equal(live() - base, 24, "storage still referenced by b and c");
  assert.deepEqual([...await b.data()], [0, 1, 2, 3, 4, 5]);
  b.dispose();
  assert.deepEqual([...await c.data()], [0, 1, 2, 3, 4, 5]);
  c.dispose();
  assert.equal(live(), base);
  c.dispose(); // idempotent
  assert.equal(live(), base);
});

Deno.test("use after dispose throws an error naming the tensor's shape", async () => {
  const t = fg.ones([2, 3]);
  t.dispose();
  assert.equal(t.isDisposed, true);
  assert.throws(
    () => t.add(1),
    (e: Error) => e.message.includes("[2, 3]") && e.message.includes("dispose"),
  );
  await assert.rejects(async () => await t.data(), (e: Error) => e.message.includes("[2, 3]"));
  assert.throws(() => fg.matmul(t, fg.ones([3, 2])), /\[2, 3\]/);
  assert.match(t.toString(), /disposed/);
});

Deno.test("valueAndGrad and jvp free their intermediates (also those disposed inside f)", async () => {
  const w = fg.tensor([0.1, -0.2, 0.05]);
  const x = fg.tensor([[1, 2, 3], [4, 5, 6]]);
  const base = live();
  const [v, g] = fg.valueAndGrad((p: Tensor) => {
    const y = fg.matmul(x, p);
    const z = fg.sum(fg.tanh(y));
    y.dispose(); // deferred: y is on the tape until the backward pass is done
    return z;
  })(w);
  assert.equal(live() - base, 4 + 12, "only the value and the gradient remain");
  const t = Math.tanh(0.1 - 0.4 + 0.15), s = Math.tanh(0.4 - 1 + 0.3);
  assertCloseArr(
    await g.data(),
    [0, 1, 2].map((j) => (1 - t * t) * [1, 2, 3][j]! + (1 - s * s) * [4, 5, 6][j]!),
  );
  v.dispose();
  g.dispose();
  assert.equal(live(), base);
  const dy = fg.tidy(() => {
    const [y, t] = fg.jvp((p: Tensor) => fg.sum(fg.exp(fg.matmul(x, p))), [w], [fg.ones([3])]);
    y.add(1);
    return t;
  });
  assert.equal(live() - base, 4, "jvp inside tidy keeps only the returned tangent");
  dy.dispose();
  assert.equal(live(), base);
  // Outside tidy: disposing what jvp returned plus the inputs releases everything (the
  // internal wrapper of the primal shares its storage and must not pin it).
  const v0 = fg.ones([3]), w0 = fg.tensor([1, 2, 3]);
  const [y1, t1] = fg.jvp((p: Tensor) => p.mul(2), [w0], [v0]);
  [y1, t1, v0, w0].forEach((q) => q.dispose());
  assert.equal(live(), base, "jvp outside tidy");
  w.dispose();
  x.dispose();
});

Deno.test("a 200-step training loop (matmul + bias + tanh, valueAndGrad, SGD via tidy) returns live bytes to baseline", async () => {
  const base = live();
  const g = new fg.Generator(0);
  const X = g.normal([16, 4]);
  const Wtrue = g.normal([4, 3]);
  const Y = fg.tidy(() => fg.tanh(fg.matmul(X, Wtrue)));
  let params = { W: fg.zeros([4, 3]), b: fg.zeros([3]) };
  const lossFn = (p: typeof params) => fg.mse(fg.tanh(fg.add(fg.matmul(X, p.W), p.b)), Y);
  const afterSetup = live();
  const losses: number[] = [];
  for (let i = 0; i < 200; i++) {
    const next = fg.tidy(() => {
      const [loss, gr] = fg.valueAndGrad(lossFn)(params);
      return { W: params.W.sub(gr.W.mul(0.5)), b: params.b.sub(gr.b.mul(0.5)), loss };
    });
    params.W.dispose();
    params.b.dispose();
    params = { W: next.W, b: next.b };
    if (i % 50 === 0 || i === 199) losses.push(await next.loss.item());
    next.loss.dispose();
    assert.equal(live(), afterSetup, `step ${i} leaked ${live() - afterSetup} bytes`);
  }
  assert.ok(losses.at(-1)! < 0.2 * losses[0]!, `loss did not fall: ${losses}`);
  // The data tensors were read by 200 tapes; none of them may still pin X or Y.
  assert.equal(X._held?.size ?? 0, 0);
  [X, Wtrue, Y, params.W, params.b].forEach((t) => t.dispose());
  assert.equal(live(), base);
});

Deno.test("random creation functions leave nothing behind but their result", () => {
  const z = fg.zeros([2, 3]);
  const base = live();
  const g = new fg.Generator(3);
  const outs = [
    g.uniform([6]),
    g.uniform([6], -2, 3),
    g.normal([6]),
    g.normal([6], 1, 2),
    g.randint(-4, 9, [6]),
    g.permutation(6),
    fg.randnLike(z, { seed: 1 }),
    fg.rand([6], { seed: 2 }),
  ];
  assert.equal(live() - base, outs.length * 24, "one 6-element tensor per call");
  outs.forEach((t) => t.dispose());
  assert.equal(live(), base);
  z.dispose();
});

Deno.test("tidy and dispose inside a differentiated function keep what the backward pass reads", async () => {
  const x = fg.tensor([1, 2]);
  const base = live();
  // A constant created and freed inside a tidy inside f: mul's vjp still needs it.
  const [v1, g1] = fg.valueAndGrad((p: Tensor) => fg.tidy(() => p.mul(fg.tensor([3, 4])).sum()))(x);
  assert.deepEqual([...await g1.data()], [3, 4]);
  // The same with an explicit dispose.
  const [v2, g2] = fg.valueAndGrad((p: Tensor) => {
    const c = fg.tensor([5, 6]);
    const y = p.mul(c);
    c.dispose();
    return y.sum();
  })(x);
  assert.deepEqual([...await g2.data()], [5, 6]);
  [v1, g1, v2, g2].forEach((t) => t.dispose());
  assert.equal(live(), base, "deferred tensors are freed when valueAndGrad returns");
  // Inside jvp, a tidy keeps the tangent of the tensor it returns: d/dε exp(2(x + ε)) = 2e^{2x}.
  const [y, t] = fg.jvp((p: Tensor) => fg.tidy(() => p.mul(2).exp()), [x], [fg.ones([2])]);
  const td = await t.data();
  [1, 2].forEach((xi, i) =>
    assert.ok(Math.abs(td[i]! - 2 * Math.exp(2 * xi)) < 1e-4 * Math.exp(2 * xi))
  );
  y.dispose();
  t.dispose();
  x.dispose();
});

Deno.test("composite ops free their intermediates: disposing the result and the input is enough", () => {
  const cases: [string, (x: Tensor) => Tensor][] = [
    ["softmax", (x) => fg.softmax(x)],
    ["logSoftmax", (x) => fg.logSoftmax(x, 0)],
    ["logSumExp", (x) => fg.logSumExp(x, 1)],
    ["layerNorm", (x) => fg.layerNorm(x)],
    ["mean", (x) => fg.mean(x)],
    ["variance", (x) => fg.variance(x, 0, true, 1)],
    ["argmax (flattened)", (x) => fg.argmax(x)],
    ["argmin", (x) => fg.argmin(x, 1)],
    ["div by number", (x) => fg.div(x, 2)],
    ["number / x", (x) => fg.div(2, x)],
    ["maximum number", (x) => fg.maximum(x, 0)],
    ["minimum number", (x) => fg.minimum(x, 0)],
    ["number ** x", (x) => fg.pow(2, x)],
    ["notEqual", (x) => fg.notEqual(x, 1)],
    ["pairwiseSqDist", (x) => fg.pairwiseSqDist(x, x)],
    ["mse", (x) => fg.mse(x, x)],
    ["globalNorm", (x) => fg.globalNorm([x, x])],
    ["stack", (x) => fg.stack([x, x], 1)],
    ["sumTo", (x) => fg.sumTo(x, [1, 2])],
  ];
  for (const [name, f] of cases) {
    const base = live();
    const x = fg.tensor([[0.5, 1], [2, -1]]);
    const y = f(x);
    y.dispose();
    x.dispose();
    assert.equal(live(), base, `${name} leaked ${live() - base} bytes`);
  }
  const base = live();
  const v = fg.tensor([1, 2]), m = fg.tensor([[1, 2], [3, 4]]), l = fg.tensor([1, 0]);
  const outs = [fg.matmul(v, m), fg.matmul(m, v), fg.matmul(v, v), fg.oneHot(l, 3)];
  [...outs, v, m, l].forEach((t) => t.dispose());
  assert.equal(live(), base, `1-D matmul / oneHot leaked ${live() - base} bytes`);
});
