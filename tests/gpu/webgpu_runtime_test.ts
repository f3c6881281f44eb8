/**
 * @file The WebGPU runtime: no leaks over a training-like loop, one submit per flush,
 * clear errors for freed storages and disposed tensors, validation errors surfacing on the
 * next read, and a lost device making later calls throw instead of hang.
 * @module
 */
import { strict as assert } from "node:assert";
import {
  backendByName,
  getBackend,
  matmul,
  randn,
  setBackend,
  type Tensor,
  tidy,
  valueAndGrad,
} from "../../mod.ts";
import { HAS_WEBGPU, unaryOn } from "../_helpers.ts";
import { createWebGPUBackend, type WebGPUBackend } from "../../lib/backend/webgpu.ts";
import { sizeClass } from "../../lib/device/pool.ts";

const GPU = backendByName("webgpu") as WebGPUBackend | undefined;

async function onWebGPU<T>(f: () => Promise<T>): Promise<T> {
  const prev = getBackend().name;
  setBackend("webgpu");
  try {
    return await f();
  } finally {
    setBackend(prev);
  }
}

Deno.test({
  name: "WebGPUBackend.liveBytes returns to baseline after 200 training steps",
  ignore: !HAS_WEBGPU,
  fn: () =>
    onWebGPU(async () => {
      const be = GPU!;
      const base = be.liveBytes();
      const d0 = be.stats().dispatches;
      const x = randn([64, 8], { seed: 1 });
      const y = randn([64, 1], { seed: 2 });
      let params: Record<string, Tensor> = tidy(() => ({
        w1: randn([8, 32], { seed: 3 }).mul(0.3),
        w2: randn([32, 1], { seed: 4 }).mul(0.3),
      }));
      const loss = (p: Record<string, Tensor>) =>
        matmul(matmul(x, p.w1!).tanh(), p.w2!).sub(y).square().mean();
      let first = NaN, last = NaN, afterWarmup = 0;
      for (let step = 0; step < 200; step++) {
        const next = tidy(() => {
          const [l, g] = valueAndGrad(loss)(params);
          const upd = {
            w1: params.w1!.sub(g.w1!.mul(0.1)),
            w2: params.w2!.sub(g.w2!.mul(0.1)),
          };
          return { upd, l };
        });
        for (const t of Object.values(params)) t.dispose();
        params = next.upd;
        if (step === 0) first = await next.l.item();
        if (step === 199) last = await next.l.item();
        next.l.dispose();
        if (step === 10) afterWarmup = be.liveBytes();
        if (step > 10) assert.equal(be.liveBytes(), afterWarmup, `live bytes grew at step ${step}`);
      }
      assert.ok(last < first, `loss should decrease: ${first} -> ${last}`);
      // About 19 dispatches a step (20 before the square's backward became one fused kernel).
      assert.ok(be.stats().dispatches - d0 > 200 * 15, "the loop ran on the WebGPU backend");
      for (const t of [x, y, ...Object.values(params)]) t.dispose();
      await be.sync();
      assert.equal(be.liveBytes(), base);
      // The pool served the loop: far fewer buffers were created than acquired.
      const st = be.stats();
      assert.ok(st.buffersReused > 10 * st.buffersCreated, JSON.stringify(st));
    }),
});

Deno.test({
  name: "WebGPUBackend records many dispatches into one submit per flush",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    const be = GPU!;
    be.flush();
    const s0 = be.stats();
    const x = be.upload(new Float32Array(100).fill(1));
    const tmp = [];
    let cur = x;
    for (let i = 0; i < 50; i++) {
      cur = unaryOn(be, "affine", cur, 1, 1);
      tmp.push(cur);
    }
    const s1 = be.stats();
    assert.equal(s1.submits, s0.submits, "nothing is submitted before a flush or read");
    assert.equal(s1.pendingDispatches, 50);
    const out = await be.read(cur);
    assert.equal(out[99], 51);
    const s2 = be.stats();
    assert.equal(s2.submits, s0.submits + 1, "one submit for 50 dispatches and a read");
    assert.equal(s2.dispatches, s0.dispatches + 50);
    be.flush();
    assert.equal(be.stats().submits, s2.submits, "flush with nothing recorded does not submit");
    for (const t of [x, ...tmp]) be.free(t);
    // Past the batch limit the runtime submits on its own, keeping bind groups bounded.
    const limit = be.runtime.maxBatchDispatches;
    const y = be.fill(16, 0);
    const s3 = be.stats();
    for (let i = 0; i < limit + 10; i++) be.free(unaryOn(be, "exp", y, 0, 0));
    be.flush();
    assert.equal(be.stats().submits, s3.submits + 2);
    be.free(y);
  },
});

Deno.test({
  name: "WebGPUBackend reports freed storages and disposed tensors clearly",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    const be = GPU!;
    const s = be.upload(Float32Array.from([1, 2]));
    be.free(s);
    be.free(s); // idempotent
    await assert.rejects(() => be.read(s), /after it was freed/);
    assert.throws(() => unaryOn(be, "exp", s, 0, 0), /after it was freed/);
    await onWebGPU(async () => {
      const t = randn([3], { seed: 0 });
      t.dispose();
      await assert.rejects(async () => await t.data(), /used after dispose/);
    });
    const cpuStorage = backendByName("cpu")!.upload(Float32Array.from([1]));
    assert.throws(() => unaryOn(be, "exp", cpuStorage, 0, 0), TypeError);
  },
});

Deno.test({
  name: "sizeClass rounds to powers of two, then eighths of an octave",
  fn: () => {
    assert.equal(sizeClass(1), 16);
    assert.equal(sizeClass(17), 32);
    assert.equal(sizeClass(65536), 65536);
    assert.equal(sizeClass(65537), 65536 + 16384);
    assert.equal(sizeClass(1000000), 1048576);
    assert.equal(sizeClass(1 << 20 | 1), (1 << 21) / 8 * 5);
    // Never above the binding limit when the request fits under it.
    assert.equal(sizeClass(100_000_000, 100_000_000), 100_000_000);
  },
});

Deno.test({
  name: "a WebGPU validation error makes the next read reject with its message",
  ignore: !HAS_WEBGPU,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const be = await createWebGPUBackend();
    const origError = console.error;
    console.error = () => {};
    try {
      be.runtime.device.createShaderModule({ code: "this is not wgsl" });
      const s = be.upload(Float32Array.from([1]));
      await new Promise((r) => setTimeout(r, 50));
      await assert.rejects(() => be.read(s), /validation error.*not/s);
      // Reported once: later reads work again.
      assert.deepEqual([...(await be.read(s))], [1]);
    } finally {
      console.error = origError;
      be.destroyDevice();
    }
  },
});

Deno.test({
  name: "a lost WebGPU device makes later calls throw and pending reads settle",
  ignore: !HAS_WEBGPU,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const be = await createWebGPUBackend();
    const x = be.upload(new Float32Array(1 << 16).fill(2));
    let y = x;
    for (let i = 0; i < 20; i++) y = unaryOn(be, "sqrt", y, 0, 0);
    const pending = be.read(y);
    be.destroyDevice();
    // The read either completed before the loss or rejects: it must not hang.
    const settled = await Promise.race([
      pending.then(() => "resolved", (e: Error) => e.message),
      new Promise<string>((r) => setTimeout(() => r("hung"), 5000)),
    ]);
    assert.notEqual(settled, "hung");
    if (settled !== "resolved") assert.match(settled, /lost/);
    assert.throws(() => unaryOn(be, "exp", x, 0, 0), /device was lost/);
    assert.throws(() => be.alloc(4), /device was lost/);
    await assert.rejects(() => be.read(x), /device was lost/);
    await assert.rejects(() => be.sync(), /device was lost/);
    be.free(x); // freeing after a loss is quiet
  },
});
