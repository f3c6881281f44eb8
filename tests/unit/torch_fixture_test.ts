/**
 * @file Golden tests against PyTorch (tests/testdata/torch_*.safetensors, written by
 * tasks/gen_fixtures.py with Debian's python3-torch 1.13 in float64): forward outputs and
 * gradients of nn modules, and optimizer trajectories, on every available backend.
 *
 * Tolerances: rtol 1e-5 as asked, plus an atol sized to f32 rounding of the computation.
 * A dot product of K terms of size ≤ s carries roughly √K·s·2⁻²⁴ of rounding; for the MLP
 * and block (K ≤ 64, s ≲ 3) that is below 2e-6, so atol = 2e-6 × the largest |reference| of
 * the tensor (floored at 2e-6) leaves a margin. The DiT runs 256-wide time features through
 * two blocks, so its atol is 1e-5 × max|ref|.
 * @module
 */
import { strict as assert } from "node:assert";
import {
  type BackendName,
  getBackend,
  nn,
  optim,
  setBackend,
  type Tensor,
  tensor,
  valueAndGrad,
} from "../../mod.ts";
import { assertClose, HAS_WEBGPU } from "../_helpers.ts";

type Arr = { shape: number[]; data: Float32Array };

/** A minimal safetensors reader (F32 only), independent of lib/io. */
function readSafetensors(path: string): Record<string, Arr> {
  const bytes = Deno.readFileSync(new URL(path, import.meta.url));
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(dv.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  const out: Record<string, Arr> = {};
  for (const [k, v] of Object.entries(header)) {
    if (k === "__metadata__") continue;
    const e = v as { dtype: string; shape: number[]; data_offsets: [number, number] };
    assert.equal(e.dtype, "F32");
    const [b, en] = e.data_offsets;
    const raw = bytes.slice(8 + n + b, 8 + n + en);
    out[k] = { shape: e.shape, data: new Float32Array(raw.buffer) };
  }
  return out;
}

const BACKENDS: BackendName[] = HAS_WEBGPU ? ["cpu", "webgpu"] : ["cpu"];

// When no adapter exists the WebGPU half of every fixture test is skipped: report it.
Deno.test({
  name: "PyTorch fixtures are checked on the WebGPU backend too (ignored: no WebGPU adapter)",
  ignore: !HAS_WEBGPU,
  fn: () => assert.ok(BACKENDS.includes("webgpu")),
});

/** Run `fn` once per available backend (CPU always; WebGPU when an adapter exists). */
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

function maxAbs(a: Float32Array): number {
  let m = 0;
  for (const v of a) m = Math.max(m, Math.abs(v));
  return m;
}

async function check(t: Tensor, ref: Arr, msg: string, atolFrac = 2e-6): Promise<void> {
  assert.deepEqual([...t.shape], ref.shape, `${msg}: shape`);
  const atol = Math.max(atolFrac * maxAbs(ref.data), 2e-6);
  assertClose(await t.data(), ref.data, { rtol: 1e-5, atol, msg });
}

function params(fx: Record<string, Arr>): Record<string, Arr> {
  return Object.fromEntries(
    Object.entries(fx).filter(([k]) => k.startsWith("param.")).map(([k, v]) => [k.slice(6), v]),
  );
}

function up(a: Arr): Tensor {
  return tensor(a.data, a.shape);
}

Deno.test("nn.Sequential(Linear, GELU, Linear, SiLU, Linear) matches PyTorch forward and gradients", async () => {
  const fx = readSafetensors("../testdata/torch_mlp.safetensors");
  await onEachBackend(async (be) => {
    const net = new nn.Sequential([
      new nn.Linear(3, 8),
      new nn.GELU(),
      new nn.Linear(8, 8),
      new nn.SiLU(),
      new nn.Linear(8, 2),
    ]);
    net.loadStateDict(params(fx));
    const x = up(fx.input!);
    const ps = net.parameters();
    const [[loss, out], grads] = valueAndGrad(
      (p: Tensor[]) => {
        const o = net.forward(p[p.length - 1]!);
        return [o.square().mean(), o] as [Tensor, Tensor];
      },
      { hasAux: true },
    )([...ps, x]);
    await check(out, fx.output!, `${be} output`);
    await check(loss.reshape([1]), fx.loss!, `${be} loss`);
    const names = [...net.namedParameters().keys()];
    for (let i = 0; i < names.length; i++) {
      await check(grads[i]!, fx[`grad.${names[i]}`]!, `${be} grad ${names[i]}`);
    }
    await check(grads[names.length]!, fx.grad_input!, `${be} grad input`);
    net.dispose();
  });
});

Deno.test("nn.AdaLNZeroBlock with non-zero modulation matches PyTorch's DiTBlock forward and gradients", async () => {
  const fx = readSafetensors("../testdata/torch_attn.safetensors");
  await onEachBackend(async (be) => {
    const blk = new nn.AdaLNZeroBlock(8, 2);
    blk.loadStateDict(params(fx));
    const x = up(fx.x!), c = up(fx.c!);
    const ps = blk.parameters();
    const [[loss, out], grads] = valueAndGrad(
      (p: Tensor[]) => {
        const o = blk.forward(p[p.length - 2]!, p[p.length - 1]!);
        return [o.square().mean(), o] as [Tensor, Tensor];
      },
      { hasAux: true },
    )([...ps, x, c]);
    await check(out, fx.output!, `${be} output`);
    await check(loss.reshape([1]), fx.loss!, `${be} loss`);
    const names = [...blk.namedParameters().keys()];
    assert.equal(names.length, 10);
    for (let i = 0; i < names.length; i++) {
      await check(grads[i]!, fx[`grad.${names[i]}`]!, `${be} grad ${names[i]}`);
    }
    await check(grads[names.length]!, fx.grad_x!, `${be} grad x`);
    await check(grads[names.length + 1]!, fx.grad_c!, `${be} grad c`);
    blk.dispose();
  });
});

Deno.test("nn.DiT loads a PyTorch DiT state dict by name and matches its forward and gradients", async () => {
  const fx = readSafetensors("../testdata/torch_dit.safetensors");
  await onEachBackend(async (be) => {
    const net = new nn.DiT({
      inputSize: 4,
      patchSize: 2,
      inChannels: 1,
      hiddenSize: 16,
      depth: 2,
      numHeads: 2,
      numClasses: 3,
    });
    // Our fixed positional table must equal the reference's before we overwrite it.
    await check(net.posEmbed, fx["param.pos_embed"]!, `${be} pos_embed`);
    net.loadStateDict(params(fx)); // strict: every name and shape must match
    net.eval();
    const x = up(fx.x!), t = up(fx.t!), y = up(fx.y!);
    const ps = net.parameters();
    assert.equal(ps.length + 1, Object.keys(params(fx)).length); // + pos_embed (a buffer)
    const [[loss, out], grads] = valueAndGrad(
      (p: Tensor[]) => {
        const o = net.forward(p[p.length - 1]!, t, y);
        return [o.square().mean(), o] as [Tensor, Tensor];
      },
      { hasAux: true },
    )([...ps, x]);
    await check(out, fx.output!, `${be} output`, 1e-5);
    await check(loss.reshape([1]), fx.loss!, `${be} loss`, 1e-5);
    const names = [...net.namedParameters().keys()];
    for (let i = 0; i < names.length; i++) {
      await check(grads[i]!, fx[`grad.${names[i]}`]!, `${be} grad ${names[i]}`, 1e-5);
    }
    await check(grads[names.length]!, fx.grad_x!, `${be} grad x`, 1e-5);
    net.dispose();
  });
});

Deno.test("optim SGD/Adam/AdamW/RAdam follow PyTorch's trajectories over 8 steps", async () => {
  const fx = readSafetensors("../testdata/torch_optim.safetensors");
  const make: Record<string, () => optim.Optimizer> = {
    sgd: () => new optim.SGD({ lr: 0.1, momentum: 0.9, weightDecay: 0.01 }),
    sgd_nesterov: () => new optim.SGD({ lr: 0.1, momentum: 0.9, nesterov: true }),
    adam: () => new optim.Adam({ lr: 0.01, weightDecay: 0.1 }),
    adamw: () => new optim.AdamW({ lr: 0.01, weightDecay: 0.1 }),
    radam: () => new optim.RAdam({ lr: 0.01, weightDecay: 0.05 }),
  };
  await onEachBackend(async (be) => {
    for (const [name, mk] of Object.entries(make)) {
      const p = up(fx.p0!);
      const opt = mk();
      for (let i = 0; i < 8; i++) {
        const g = up(fx[`grad.${i}`]!);
        opt.step([p], [g]);
        g.dispose();
        await check(p, fx[`${name}.${i}`]!, `${be} ${name} step ${i + 1}`);
      }
      opt.dispose();
      p.dispose();
    }
  });
});
