import { strict as assert } from "node:assert";
import {
  type Backend,
  backendByName,
  fused,
  fusedGroups,
  type Fx,
  fx,
  getBackend,
  nn,
  onesLike,
  optim,
  setBackend,
  type Tensor,
  tensor,
} from "../../mod.ts";
import { assertClose, CPU, HAS_WEBGPU } from "../_helpers.ts";
import type { WebGPUBackend } from "../../lib/backend/webgpu.ts";

const GPU = backendByName("webgpu") as Backend;
const BACKENDS: [string, Backend][] = HAS_WEBGPU ? [["cpu", CPU], ["webgpu", GPU]] : [[
  "cpu",
  CPU,
]];

// When no adapter exists the WebGPU tests below are not registered: report it as ignored.
Deno.test({
  name:
    "grouped optimizer kernels are tested on the WebGPU backend too (ignored: no WebGPU adapter)",
  ignore: !HAS_WEBGPU,
  fn: () => assert.ok(BACKENDS.some(([n]) => n === "webgpu")),
});

/** A seeded JS PRNG (mulberry32), independent of the engine's Philox. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// An Adam-like update: (p, g, m, v, nss, ibc2) → [p', m', v'].
const adamLike = (p: Fx, g: Fx, m: Fx, v: Fx, nss: Fx, ibc2: Fx): Fx[] => {
  const m2 = m.mul(0.9).add(g.mul(0.1));
  const v2 = v.mul(0.999).add(g.square().mul(0.001));
  return [p.add(m2.div(v2.sqrt().mul(ibc2).add(1e-8)).mul(nss)), m2, v2];
};

function makeGroups(sizes: readonly number[], be: Backend, seed: number): Tensor[][] {
  const r = rng(seed);
  return sizes.map((n) =>
    [0, 1, 2, 3].map((j) =>
      tensor(Float32Array.from({ length: n }, () => (j === 3 ? r() : r() * 4 - 2)), [n], be)
    )
  );
}

async function checkAgainstFused(sizes: readonly number[], be: Backend, name: string) {
  const groups = makeGroups(sizes, be, sizes.length);
  const sc = [tensor(-0.01, [], be), tensor(1.5, [], be)];
  const got = fusedGroups(groups, sc, (p, g, m, v, a, b) => adamLike(p!, g!, m!, v!, a!, b!));
  assert.equal(got.length, sizes.length);
  for (let i = 0; i < sizes.length; i++) {
    const want = fused(
      [...groups[i]!, ...sc],
      (p, g, m, v, a, b) => adamLike(p!, g!, m!, v!, a!, b!),
    );
    // Independent check of the first output with plain JS loops.
    const [p, g, m, v] = await Promise.all(groups[i]!.map((t) => t.data()));
    const js = new Float32Array(sizes[i]!);
    for (let e = 0; e < js.length; e++) {
      const m2 = Math.fround(0.9 * m![e]! + 0.1 * g![e]!);
      const v2 = Math.fround(0.999 * v![e]! + 0.001 * g![e]! * g![e]!);
      js[e] = p![e]! + -0.01 * m2 / (Math.sqrt(v2) * 1.5 + 1e-8);
    }
    for (let o = 0; o < 3; o++) {
      assert.deepEqual(got[i]![o]!.shape, [sizes[i]]);
      assertClose(await got[i]![o]!.data(), await want[o]!.data(), {
        rtol: 1e-6,
        atol: 1e-7,
        msg: `${name} group ${i} (size ${sizes[i]}) output ${o}`,
      });
    }
    assertClose(await got[i]![0]!.data(), js, {
      rtol: 1e-4,
      atol: 1e-6,
      msg: `${name} group ${i} vs JS`,
    });
    want.forEach((t) => t.dispose());
  }
  [...groups.flat(), ...got.flat(), ...sc].forEach((t) => t.dispose());
}

for (const [name, be] of BACKENDS) {
  Deno.test(`fusedGroups matches per-group fused and JS loops on ${name} (odd sizes)`, async () => {
    await checkAgainstFused([1, 7, 33, 257, 1000], be, name);
  });
  Deno.test(`fusedGroups splits more groups than the binding limit on ${name}`, async () => {
    // 40 groups × 7 buffers is far beyond maxStorageBuffersPerShaderStage (8–32+).
    const r = rng(9);
    const sizes = Array.from({ length: 40 }, () => 1 + Math.floor(r() * 300));
    await checkAgainstFused(sizes, be, name);
  });
  Deno.test(`fusedGroups into updates the input tensors in place on ${name}`, async () => {
    const groups = makeGroups([5, 1000, 3], be, 3);
    const before = await Promise.all(groups.map((g) => Promise.all(g.map((t) => t.data()))));
    // A reshape view sharing group 1's p: the update must not reach it (like _assign).
    const view = groups[1]![0]!.reshape([10, 100]);
    const res = fusedGroups(
      groups,
      [],
      (p, g, m, v) => adamLike(p!, g!, m!, v!, fx.const(-0.1), fx.const(1)),
      {
        into: [0, 2, 3],
      },
    );
    for (let i = 0; i < groups.length; i++) {
      assert.equal(res[i]![0], groups[i]![0]);
      assert.equal(res[i]![1], groups[i]![2]);
      const [p, g, m, v] = before[i]!;
      const wantP = new Float32Array(p!.length), wantM = new Float32Array(p!.length);
      for (let e = 0; e < p!.length; e++) {
        const m2 = Math.fround(0.9 * m![e]! + 0.1 * g![e]!);
        const v2 = Math.fround(0.999 * v![e]! + 0.001 * g![e]! * g![e]!);
        wantM[e] = m2;
        wantP[e] = p![e]! + -0.1 * m2 / (Math.sqrt(v2) + 1e-8);
      }
      assertClose(await groups[i]![0]!.data(), wantP, { rtol: 1e-4, atol: 1e-6, msg: `p ${i}` });
      assertClose(await groups[i]![2]!.data(), wantM, { rtol: 1e-5, atol: 1e-7, msg: `m ${i}` });
    }
    assert.deepEqual(await view.data(), before[1]![0]);
    view.dispose();
    groups.flat().forEach((t) => t.dispose());
  });
}

Deno.test("fusedGroups rejects groups of mismatched shapes or arity", () => {
  const a = tensor([1, 2]), b = tensor([1, 2, 3]);
  assert.throws(() => fusedGroups([[a, b]], [], (x, y) => x!.add(y!)), RangeError);
  assert.throws(() => fusedGroups([[a], [a, a]], [], (x) => x!), RangeError);
  assert.throws(() => fusedGroups([[a]], [b], (x) => x!), RangeError);
  assert.throws(() => fusedGroups([[a]], [], (x) => x!, { into: [3] }), RangeError);
  a.dispose();
  b.dispose();
});

Deno.test({
  name:
    "Adam.step on WebGPU updates 8 VelocityMLP parameters in 1 dispatch (3 when splitting large)",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    const prev = getBackend();
    setBackend("webgpu");
    const gpu = GPU as WebGPUBackend;
    const split = gpu.groupsSplitLarge;
    try {
      const model = new nn.VelocityMLP({ dim: 2, hidden: 128, depth: 3, seed: 1 });
      const params = model.parameters();
      assert.equal(params.length, 8);
      const grads = params.map((p) => onesLike(p));
      const ref = new nn.VelocityMLP({ dim: 2, hidden: 128, depth: 3, seed: 1 });
      const refParams = ref.parameters();
      const opt = new optim.Adam({ lr: 0.01 }), refOpt = new optim.Adam({ lr: 0.01 });
      const count = (f: () => void) => {
        gpu.flush();
        const d0 = gpu.stats().dispatches;
        f();
        gpu.flush();
        return gpu.stats().dispatches - d0;
      };
      // The first step also creates the zero slots (fills): count from the second.
      opt.step(params, grads);
      gpu.groupsSplitLarge = false;
      assert.equal(count(() => opt.step(params, grads)), 1);
      // Default: a CPU adapter gives the two 128×128 weights a dispatch each (3 in all); a GPU
      // adapter keeps one.
      gpu.groupsSplitLarge = split;
      assert.equal(count(() => opt.step(params, grads)), split ? 3 : 1);
      // The same two steps group by group (a one-group kernel per parameter) give the same
      // parameters.
      gpu.groupsPerDispatch = 1;
      try {
        const rg = refParams.map((p) => onesLike(p));
        refOpt.step(refParams, rg);
        assert.equal(count(() => refOpt.step(refParams, rg)), 8);
        refOpt.step(refParams, rg);
        rg.forEach((g) => g.dispose());
      } finally {
        gpu.groupsPerDispatch = Infinity;
      }
      for (let i = 0; i < 8; i++) {
        assertClose(await params[i]!.data(), await refParams[i]!.data(), {
          rtol: 1e-6,
          atol: 1e-7,
          msg: `param ${i}`,
        });
      }
      grads.forEach((g) => g.dispose());
      opt.dispose();
      refOpt.dispose();
    } finally {
      gpu.groupsSplitLarge = split;
      setBackend(prev.name);
    }
  },
});
