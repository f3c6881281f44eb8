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
import { assertClose, BACKENDS_HERE, HAS_WEBGPU } from "../_helpers.ts";

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

const BACKENDS: BackendName[] = BACKENDS_HERE;

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

Deno.test("optim.Muon follows a PyTorch reference Muon (+ AdamW for the rest) over 5 steps, and resumes from its state dict", async () => {
  // tasks/gen_fixtures.py muon: Keller Jordan's Muon in float64 on a tall [6,4], a wide [3,5]
  // and a conv [3,2,2,2] weight; torch.optim.AdamW (betas 0.9/0.95, eps 1e-10) on a bias [5]
  // and an embedding table [4,3] that the mask leaves out. Newton–Schulz amplifies f32
  // rounding a little (five quintic iterations), hence atol 1e-5·max|ref|.
  const fx = readSafetensors("../testdata/torch_muon.safetensors");
  const keys = ["p0", "p1", "p2", "p3", "p4"];
  const mask = [true, true, true, false, false];
  const make: Record<string, () => optim.Muon> = {
    nesterov: () =>
      new optim.Muon({
        lr: 0.02,
        momentum: 0.95,
        weightDecay: 0.1,
        muon: mask,
        adamw: { lr: 3e-3, weightDecay: 0.05 },
      }),
    plain: () =>
      new optim.Muon({
        lr: 0.05,
        momentum: 0.9,
        nesterov: false,
        muon: mask,
        adamw: { lr: 1e-2 },
      }),
  };
  await onEachBackend(async (be) => {
    for (const [name, mk] of Object.entries(make)) {
      const ps = keys.map((k) => up(fx[`init.${k}`]!));
      let opt = mk();
      for (let i = 0; i < 5; i++) {
        if (i === 2) {
          // Continue from a state dict (as a resumed run does): same trajectory.
          const saved = opt.stateDict();
          const next = mk();
          next.loadStateDict(saved, ps);
          opt.dispose();
          opt = next;
        }
        const gs = keys.map((k) => up(fx[`grad.${i}.${k}`]!));
        opt.step(ps, gs);
        gs.forEach((g) => g.dispose());
        for (let j = 0; j < keys.length; j++) {
          await check(
            ps[j]!,
            fx[`${name}.${i}.${keys[j]}`]!,
            `${be} ${name} step ${i + 1} ${keys[j]}`,
            1e-5,
          );
        }
      }
      assert.deepEqual(
        Object.keys(opt.stateDict().tensors).sort(),
        [
          "exp_avg.3",
          "exp_avg.4",
          "exp_avg_sq.3",
          "exp_avg_sq.4",
          "momentum_buffer.0",
          "momentum_buffer.1",
          "momentum_buffer.2",
        ],
      );
      opt.dispose();
      ps.forEach((p) => p.dispose());
    }
  });
});

// ---- VelocityMLP at f32 tolerances (tests/testdata/torch_equiv_mlp.safetensors) ----

Deno.test("nn.VelocityMLP (labels, time features) matches PyTorch forward and every parameter gradient at f32 tolerance", async () => {
  // tasks/torch/fixtures.py: VelocityMLP(2, hidden 32, depth 3, 3 classes), every weight
  // random; `out` = net(x, t, y) in f64; grad.* = d/dθ mean((net(x_t, t1, y1) − (x1 − x0))²)
  // with x_t = (1 − t1)·x0 + t1·x1 (computed here by hand, independently of cfmLoss).
  const fx = readSafetensors("../testdata/torch_equiv_mlp.safetensors");
  await onEachBackend(async (be) => {
    const net = new nn.VelocityMLP({
      dim: 2,
      hidden: 32,
      depth: 3,
      numClasses: 3,
      classDropoutProb: 0.1,
    });
    net.loadStateDict(params(fx));
    net.eval();
    await check(net.forward(up(fx.x!), up(fx.t!), up(fx.y!)), fx.out!, `${be} forward`);
    const x1 = up(fx.x1!), x0 = up(fx.x0!), t1 = up(fx.t1!), y1 = up(fx.y1!);
    const tc = t1.reshape([-1, 1]);
    const xt = x0.mul(tc.mul(-1).add(1)).add(x1.mul(tc));
    const target = x1.sub(x0);
    const names = [...net.namedParameters().keys()];
    assert.equal(names.length, Object.keys(params(fx)).length);
    const [loss, grads] = valueAndGrad((_p: Tensor[]) =>
      net.forward(xt, t1, y1).sub(target).square().mean()
    )(net.parameters());
    await check(loss.reshape([1]), fx.loss!, `${be} loss`);
    for (let i = 0; i < names.length; i++) {
      await check(grads[i]!, fx[`grad.${names[i]}`]!, `${be} grad ${names[i]}`);
    }
    net.dispose();
  });
});

// ---- EMA, gradient clipping, LR schedules (tests/testdata/torch_train.safetensors) ----

const TRAIN = "../testdata/torch_train.safetensors";

Deno.test("optim.EMA follows torch AveragedModel with the warm-up decay and with a fixed decay over 8 updates", async () => {
  const fx = readSafetensors(TRAIN);
  await onEachBackend(async (be) => {
    for (const [name, decay, warmup] of [["warm", 0.4, true], ["fixed", 0.9, false]] as const) {
      const net = new nn.Linear(4, 3);
      net.loadStateDict({ weight: fx["ema.p0.weight"]!, bias: fx["ema.p0.bias"]! });
      const ema = new optim.EMA(net, { decay, warmup });
      for (let k = 1; k <= 8; k++) {
        net.loadStateDict({ weight: fx[`ema.p${k}.weight`]!, bias: fx[`ema.p${k}.bias`]! });
        ema.update(net);
        const [w, b] = ema.shadow;
        await check(w!, fx[`ema.${name}.${k}.weight`]!, `${be} ${name} update ${k} weight`);
        await check(b!, fx[`ema.${name}.${k}.bias`]!, `${be} ${name} update ${k} bias`);
      }
      net.dispose();
    }
  });
});

Deno.test("optim.clipGradNorm matches torch.nn.utils.clip_grad_norm_ above and below the limit", async () => {
  const fx = readSafetensors(TRAIN);
  await onEachBackend(async (be) => {
    for (const name of ["clipped", "unclipped"]) {
      const gs = [up(fx[`clip.${name}.g0`]!), up(fx[`clip.${name}.g1`]!)];
      const { grads, norm } = optim.clipGradNorm(gs, fx[`clip.${name}.max_norm`]!.data[0]!);
      await check(norm.reshape([1]), fx[`clip.${name}.norm`]!, `${be} ${name} norm`);
      await check(grads[0]!, fx[`clip.${name}.out0`]!, `${be} ${name} grad 0`);
      await check(grads[1]!, fx[`clip.${name}.out1`]!, `${be} ${name} grad 1`);
    }
  });
});

Deno.test("every optim LR schedule matches its torch.optim.lr_scheduler counterpart step by step", () => {
  const fx = readSafetensors(TRAIN);
  // Fixture parameters: base 0.1, warm-up 5, cosine over 30 steps with floor 0.01,
  // inverse square root from step 8 (tasks/gen_fixtures.py gen_train).
  const base = 0.1;
  const cases: Record<string, optim.LrSchedule> = {
    constant: optim.constant(),
    warmup: optim.linearWarmup(5),
    cosine: optim.cosine(30),
    cosine_floor: optim.cosine(30, { minLr: 0.01 }),
    cosine_warmup: optim.cosine(30, { warmup: 5, minLr: 0.01 }),
    inverse_sqrt: optim.inverseSqrt(8),
  };
  // Every schedule lib/optim exports is covered.
  const exported = ["constant", "linearWarmup", "cosine", "inverseSqrt"];
  for (const k of exported) assert.equal(typeof (optim as Record<string, unknown>)[k], "function");
  for (const [name, s] of Object.entries(cases)) {
    const ref = fx[`lr.${name}`]!.data;
    const got = Array.from(ref, (_, step) => s(step, base));
    // f64 on both sides, stored as f32: one f32 rounding (2^-24 relative) apart.
    assertClose(got, ref, { rtol: 1e-7, atol: 0, msg: `lr ${name}` });
  }
});
