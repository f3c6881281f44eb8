/**
 * @file A/B of the traced step against eager execution on the toy-cfm step of the bench (MLP
 * [x(2), t] → 256 → 256 → 256 → 2, Adam, batch from `eightGaussians` on the device, loss summed
 * in place), alternating the two in one process so both see the same machine load. Prints one
 * JSON line per round and a summary (medians, min, max of steps/s; process CPU ms per step; host
 * ms of one step with the GPU idle).
 *
 *   deno run --allow-read=. --allow-env=FLOWGPU_BACKEND --allow-sys=loadavg bench/trace_ab.ts 256 1024
 * @module
 */
import process from "node:process";
import {
  cfmLoss,
  eightGaussians,
  fusedGroups,
  Generator,
  getBackend,
  init,
  nn,
  optim,
  StepTracer,
  type Tensor,
  tensor,
  valueAndGrad,
} from "../mod.ts";

await init();
const be = getBackend();
const batches = Deno.args.length ? Deno.args.map(Number) : [256, 1024];
const steps = 20, rounds = 5;
for (const batch of batches) {
  const net = new nn.VelocityMLP({ dim: 2, hidden: 256, depth: 3, seed: 0 });
  const params = net.parameters();
  const opt = new optim.Adam({ lr: 1e-3 });
  const gen = new Generator(1);
  const lossSum = tensor([0]);
  const lossFn = valueAndGrad((_p: Tensor[], x1: Tensor) =>
    cfmLoss((x, t) => net.forward(x, t), x1, { generator: gen }).loss
  );
  // The batch is drawn before the step, as a trainer's `prepare` does (eightGaussians picks
  // its components with host random numbers, which a trace cannot replay): the step's input.
  const body = (x1: Tensor) => {
    const [loss, grads] = lossFn(params, x1);
    opt.step(params, grads);
    const l1 = loss.reshape([1]);
    fusedGroups([[lossSum, l1]], [], (s, l) => s!.add(l!), { into: [0] });
    l1.dispose();
    grads.forEach((g) => g.dispose());
    loss.dispose();
  };
  const one = (traced: boolean, step: number) => {
    const x1 = eightGaussians(batch, { generator: gen });
    if (traced) tracer.run({ step }, [x1], () => body(x1));
    else body(x1);
    x1.dispose();
  };
  const tracer = new StepTracer({ enabled: true, log: (l) => console.error(l) });
  let s = 0;
  const time = async (traced: boolean) => {
    await be.sync();
    const c0 = process.cpuUsage(), t0 = performance.now();
    for (let i = 0; i < steps; i++) {
      one(traced, ++s);
    }
    await be.sync();
    const c = process.cpuUsage(c0);
    return {
      sps: steps / ((performance.now() - t0) / 1000),
      cpuMs: (c.user + c.system) / 1000 / steps,
    };
  };
  for (let i = 0; i < 5; i++) one(false, ++s);
  for (let i = 0; i < 3; i++) one(true, ++s); // capture, compare
  const res: { eager: number[]; traced: number[]; eagerCpu: number[]; tracedCpu: number[] } = {
    eager: [],
    traced: [],
    eagerCpu: [],
    tracedCpu: [],
  };
  for (let r = 0; r < rounds; r++) {
    const e = await time(false), t = await time(true);
    res.eager.push(e.sps);
    res.traced.push(t.sps);
    res.eagerCpu.push(e.cpuMs);
    res.tracedCpu.push(t.cpuMs);
    console.log(JSON.stringify({ batch, round: r, eager: e, traced: t, load: Deno.loadavg()[0] }));
  }
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  // Host time of one step with the GPU idle (what the trace removes): from the step's start
  // until its commands are recorded (eager) or submitted (traced), the batch draw included.
  const host = async (traced: boolean) => {
    const ts: number[] = [];
    for (let i = 0; i < 11; i++) {
      await be.sync();
      const t0 = performance.now();
      one(traced, ++s);
      ts.push(performance.now() - t0);
    }
    return med(ts);
  };
  const hostEager = await host(false), hostTraced = await host(true);
  const r1 = (x: number) => Math.round(x * 10) / 10;
  const r2 = (x: number) => Math.round(x * 100) / 100;
  console.log(JSON.stringify({
    batch,
    eagerStepsPerSec: {
      median: r1(med(res.eager)),
      min: r1(Math.min(...res.eager)),
      max: r1(Math.max(...res.eager)),
    },
    tracedStepsPerSec: {
      median: r1(med(res.traced)),
      min: r1(Math.min(...res.traced)),
      max: r1(Math.max(...res.traced)),
    },
    speedup: Math.round(med(res.traced) / med(res.eager) * 100) / 100,
    eagerCpuMsPerStep: r1(med(res.eagerCpu)),
    tracedCpuMsPerStep: r1(med(res.tracedCpu)),
    hostMsPerStep: { eager: r2(hostEager), traced: r2(hostTraced) },
    replayed: tracer.counts.replayed,
    sumLoss: (await lossSum.data())[0],
    load: Deno.loadavg(),
  }));
  tracer.dispose();
  net.dispose();
  opt.dispose();
  lossSum.dispose();
}
