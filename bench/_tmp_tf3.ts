import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-webgpu";
import { MatmulJob, openGpu } from "./harness.ts";
await tf.setBackend("webgpu");
const be = tf.backend() as any;
const gpu = (await openGpu())!;
const n = Number(Deno.args[0] ?? 1024);
const A = Float32Array.from({ length: n * n }, () => Math.random() * 2 - 1),
  B = Float32Array.from({ length: n * n }, () => Math.random() * 2 - 1);
const a = tf.tensor(A, [n, n]), b = tf.tensor(B, [n, n]);
const job = new MatmulJob(gpu, A, B, {
  batch: 1,
  m: n,
  n,
  k: n,
  transA: false,
  transB: false,
  aBatchStride: 0,
  bBatchStride: 0,
});
for (let i = 0; i < 3; i++) {
  let t0 = performance.now();
  const c = tf.matMul(a, b);
  const cd = await c.data() as Float32Array;
  const t1 = performance.now();
  await job.dispatch();
  const t2 = performance.now();
  const od = await job.read();
  let e = 0;
  for (let j = 0; j < n * n; j++) e = Math.max(e, Math.abs(cd[j] - od[j]));
  console.log(
    "tfjs+read",
    (t1 - t0).toFixed(1),
    "ours",
    (t2 - t1).toFixed(1),
    "maxdiff",
    e,
    cd[12345],
    od[12345],
  );
  c.dispose();
}
