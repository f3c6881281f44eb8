/**
 * @file The fused self-attention (`selfAttention`: `Backend.attention` forward, the two-pass
 * `attentionBackward`) against a PyTorch fixture (tests/testdata/torch_attention_op.safetensors,
 * tasks/torch/attention_fixture.py, float64), the WebGPU kernels against the CPU backend at
 * shapes that are not multiples of the workgroup, the rows per invocation or 4, its forward-mode
 * and second-order derivatives against the composite, and a whole DiT training step's loss and
 * gradients with and without the fused op.
 *
 * Tolerances: rtol 1e-5 plus atol = 1e-5 × the largest |reference| of the tensor (f32 scores of
 * ≤ 32 terms of size ≲ 5 and sums of ≤ 70 softmax-weighted terms: a few 1e-7 relative to the
 * largest value; the fixture's scores reach ~10, where exp amplifies a score's rounding 10×).
 * The DiT step compares fused with unfused in f32 on the same backend: 1e-4 relative to each
 * gradient's largest entry (different summation orders through two blocks and Adam-free grads).
 * @module
 */
import { strict as assert } from "node:assert";
import {
  type BackendName,
  getBackend,
  grad,
  jvp,
  randn,
  selfAttention,
  selfAttentionComposite,
  setBackend,
  type Tensor,
  tensor,
} from "../../mod.ts";
import { _fusedAttention } from "../../lib/ops/attention.ts";
import type { WebGPUBackend } from "../../lib/backend/webgpu.ts";
import { assertDitStepUnchanged } from "../_dit_switch.ts";
import { assertClose, HAS_WEBGPU } from "../_helpers.ts";

type Arr = { shape: number[]; data: Float32Array };

/** A minimal safetensors reader (F32 only), independent of lib/io. */
function readSafetensors(
  path: string,
): { arrays: Record<string, Arr>; meta: Record<string, string> } {
  const bytes = Deno.readFileSync(new URL(path, import.meta.url));
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(dv.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  const arrays: Record<string, Arr> = {};
  for (const [k, v] of Object.entries(header)) {
    if (k === "__metadata__") continue;
    const e = v as { dtype: string; shape: number[]; data_offsets: [number, number] };
    assert.equal(e.dtype, "F32");
    const raw = bytes.slice(8 + n + e.data_offsets[0], 8 + n + e.data_offsets[1]);
    arrays[k] = { shape: e.shape, data: new Float32Array(raw.buffer) };
  }
  return { arrays, meta: header.__metadata__ ?? {} };
}

const BACKENDS: BackendName[] = HAS_WEBGPU ? ["cpu", "webgpu"] : ["cpu"];

async function onEachBackend(fn: (name: BackendName) => Promise<void>): Promise<void> {
  const prev = getBackend().name as BackendName;
  try {
    for (const b of BACKENDS) {
      setBackend(b);
      await fn(b);
    }
  } finally {
    setBackend(prev);
  }
}

/** WebGPU's rows per invocation [forward, query pass, key pass]; undefined = the default. */
function withRows<T>(rows: [number, number, number] | undefined, fn: () => T): T {
  const be = getBackend() as unknown as Partial<WebGPUBackend>;
  if (!("attentionRowsOverride" in be)) return fn();
  const prev = be.attentionRowsOverride;
  be.attentionRowsOverride = rows;
  try {
    return fn();
  } finally {
    be.attentionRowsOverride = prev;
  }
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

function close(got: Float32Array, want: ArrayLike<number>, msg: string, frac = 1e-5): void {
  assertClose(got, want, { rtol: 1e-5, atol: Math.max(frac * maxAbs(want), 1e-6), msg });
}

// Rows per invocation on WebGPU: the default, one row (no blocking), and blocks that leave
// partial last blocks for every fixture size.
const ROWS: ([number, number, number] | undefined)[] = [undefined, [1, 1, 1], [8, 3, 5]];

Deno.test("selfAttention matches PyTorch's attention forward and gradient (fixture)", async () => {
  const { arrays: fx, meta } = readSafetensors("../testdata/torch_attention_op.safetensors");
  const cases = meta.cases!.split(",");
  assert.ok(cases.length >= 5);
  await onEachBackend(async (be) => {
    for (const name of cases) {
      const [, , h] = name.split("x").map(Number) as [number, number, number, number];
      const qkv = tensor(fx[`${name}.qkv`]!.data, fx[`${name}.qkv`]!.shape);
      const w = tensor(fx[`${name}.w`]!.data, fx[`${name}.w`]!.shape);
      for (const rows of be === "webgpu" ? ROWS : [undefined]) {
        const tag = `${be} ${name} rows ${rows ?? "default"}`;
        const [out, g] = withRows(rows, () => {
          const o = selfAttention(qkv, h);
          const dx = grad((x: Tensor) => selfAttention(x, h).mul(w).sum())(qkv);
          return [o, dx];
        });
        assert.deepEqual([...out.shape], fx[`${name}.out`]!.shape);
        close(await out.data(), fx[`${name}.out`]!.data, `${tag} out`);
        close(await g.data(), fx[`${name}.grad`]!.data, `${tag} grad`);
        out.dispose();
        g.dispose();
      }
      qkv.dispose();
      w.dispose();
    }
  });
});

Deno.test({
  name: "WebGPU attention kernels match the CPU backend (forward, lse, backward)",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    const prev = getBackend().name as BackendName;
    try {
      // (b, n, heads, d): n not a multiple of 8 (a SIMD chunk) nor of the rows per invocation;
      // d = 6 and 3 take the scalar (non-vec4) path; one token; a head as wide as 64.
      for (
        const [b, n, h, d] of [[3, 49, 4, 32], [2, 17, 3, 6], [5, 9, 1, 3], [1, 1, 2, 4], [
          2,
          33,
          2,
          64,
        ]] as const
      ) {
        const host = await randn([b, n, 3 * h * d], { seed: n }).data();
        const gHost = await randn([b, n, h * d], { seed: n + 1 }).data();
        const res: Record<string, Float32Array[]> = {};
        for (const name of ["cpu", "webgpu"] as const) {
          const be = setBackend(name);
          const x = be.upload(host), gy = be.upload(gHost);
          const [o, l] = be.attention(x, b, n, h, d, 0.3);
          const dx = be.attentionBackward(x, o, l, gy, b, n, h, d, 0.3);
          res[name] = [await be.read(o), await be.read(l), await be.read(dx)];
          for (const s of [x, gy, o, l, dx]) be.free(s);
        }
        const [oc, lc, dc] = res.cpu!, [ow, lw, dw] = res.webgpu!;
        const tag = `[${b}, ${n}, ${h}, ${d}]`;
        close(ow!, oc!, `${tag} o`);
        close(lw!, lc!, `${tag} lse`);
        close(dw!, dc!, `${tag} dqkv`);
      }
    } finally {
      setBackend(prev);
    }
  },
});

Deno.test("selfAttention: forward mode and second-order gradients equal the composite's", async () => {
  await onEachBackend(async (be) => {
    const qkv = randn([2, 7, 3 * 2 * 4], { seed: 3 }), t = randn(qkv.shape, { seed: 4 });
    const w = randn([2, 7, 8], { seed: 5 });
    const f = (att: typeof selfAttention) => (x: Tensor) => att(x, 2, { scale: 0.7 }).mul(w).sum();
    // jvp: the directional derivative of the loss along t.
    const [, ta] = jvp(f(selfAttention), [qkv], [t]);
    const [, tb] = jvp(f(selfAttentionComposite), [qkv], [t]);
    close(await ta.data(), await tb.data(), `${be} jvp`);
    // Second order: d/dx of ‖∇f(x)‖², through the backward (the composite rules take over).
    const g2 = (att: typeof selfAttention) =>
      grad((x: Tensor) => grad(f(att))(x).square().sum())(qkv);
    close(await g2(selfAttention).data(), await g2(selfAttentionComposite).data(), `${be} grad²`);
  });
});

Deno.test("selfAttention rejects inputs that are not [B, N, 3·heads·d]", () => {
  assert.throws(() => selfAttention(randn([4, 12], { seed: 0 }), 2), RangeError);
  assert.throws(() => selfAttention(randn([1, 4, 10], { seed: 0 }), 2), /3·numHeads·d_head/);
  assert.throws(() => selfAttention(randn([1, 4, 12], { seed: 0 }), 0), RangeError);
});

Deno.test("a DiT training step has the same loss and gradients with the fused attention", async () => {
  await onEachBackend((be) =>
    assertDitStepUnchanged(_fusedAttention, {
      backend: be,
      watch: "attn.qkv",
      lossFrac: 1e-5,
      close,
    })
  );
});
