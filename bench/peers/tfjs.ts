/**
 * @file Peer: TensorFlow.js (`@tensorflow/tfjs-backend-webgpu` 4.22.0) on the same WebGPU
 * adapter, used as a speed reference by the benchmark and as an independent numerical oracle
 * by tests. When tfjs cannot initialise WebGPU it falls back to tfjs's CPU backend, and says
 * so in {@linkcode TfjsPeer.backend}.
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";

/** A live tfjs instance on one backend. */
export interface TfjsPeer {
  /** `"webgpu"`, or `"cpu"` when WebGPU could not be initialised. */
  backend: "webgpu" | "cpu";
  /** Adapter description tfjs reports (`""` on the CPU backend). */
  adapter: string;
  /** C = op(A)·op(B) with batch broadcasting over leading axes; returns C's data. */
  matmul(
    a: Float32Array,
    aShape: number[],
    b: Float32Array,
    bShape: number[],
    transA: boolean,
    transB: boolean,
  ): Promise<Float32Array>;
  /**
   * Upload two n×n operands and return a runner: `run(products)` issues `products` (default 1)
   * matmuls and resolves once one element of the last is back on the host. The first run
   * checks that element against a host dot product and throws if it is wrong.
   */
  prepareMatmul(n: number): Promise<MatmulRunner>;
}

/** Repeatable n×n×n products on prepared operands; see {@linkcode TfjsPeer.prepareMatmul}. */
export interface MatmulRunner {
  run(products?: number): Promise<void>;
  dispose(): void;
}

let peer: Promise<TfjsPeer> | undefined;

function hostRand(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2147483648 - 1;
  }
  return out;
}

/**
 * Load tfjs once and select its WebGPU backend (or the CPU backend if that fails).
 *
 * @example
 * ```ts
 * import { loadTfjs } from "./tfjs.ts";
 * const tfp = await loadTfjs();
 * const c = await tfp.matmul(new Float32Array([1, 2]), [1, 2], new Float32Array([3, 4]), [2, 1], false, false);
 * if (c[0] !== 11) throw new Error(`got ${c[0]}`);
 * ```
 */
export function loadTfjs(): Promise<TfjsPeer> {
  peer ??= init();
  return peer;
}

async function init(): Promise<TfjsPeer> {
  let backend: "webgpu" | "cpu" = "cpu";
  try {
    await import("@tensorflow/tfjs-backend-webgpu");
    // Small ops would otherwise run on the CPU when their inputs live there.
    tf.env().set("WEBGPU_CPU_FORWARD", false);
    if (await tf.setBackend("webgpu")) backend = "webgpu";
  } catch {
    backend = "cpu";
  }
  if (backend === "cpu") {
    // Pinned to tfjs-core's version; a dependency of tfjs-backend-webgpu, so already cached.
    // deno-lint-ignore no-import-prefix
    await import("npm:@tensorflow/tfjs-backend-cpu@4.22.0");
    await tf.setBackend("cpu");
  }
  await tf.ready();
  // deno-lint-ignore no-explicit-any
  const be = tf.backend() as any;
  const adapter: string = backend === "webgpu" ? String(be.adapterInfo?.description ?? "") : "";
  return {
    backend,
    adapter,
    async matmul(a, aShape, b, bShape, transA, transB) {
      const ta = tf.tensor(a, aShape), tb = tf.tensor(b, bShape);
      const c = tf.matMul(ta, tb, transA, transB);
      try {
        return new Float32Array(await c.data());
      } finally {
        tf.dispose([ta, tb, c]);
      }
    },
    prepareMatmul(n) {
      const ha = hostRand(n * n, 1), hb = hostRand(n * n, 2);
      const a = tf.tensor(ha, [n, n]), b = tf.tensor(hb, [n, n]);
      let checked = false;
      return Promise.resolve({
        // A 1-element read forces tfjs to submit and waits for the queue, at a cost of one
        // tiny kernel and a 4-byte copy. (Calling tfjs's submitQueue() and
        // onSubmittedWorkDone() directly returned before the product existed, and later reads
        // gave zeros.)
        async run(products = 1) {
          for (let i = 1; i < products; i++) tf.matMul(a, b).dispose();
          const c = tf.matMul(a, b);
          const corner = tf.slice(c, [n - 1, n - 1], [1, 1]);
          const got = (await corner.data())[0]!;
          tf.dispose([c, corner]);
          if (!checked) {
            let want = 0;
            for (let p = 0; p < n; p++) want += ha[(n - 1) * n + p]! * hb[p * n + n - 1]!;
            if (!(Math.abs(got - want) <= 1e-3 * Math.sqrt(n) + 1e-4 * Math.abs(want))) {
              throw new Error(`tfjs matmul gave C[${n - 1}, ${n - 1}] = ${got}, expected ${want}`);
            }
            checked = true;
          }
        },
        dispose() {
          tf.dispose([a, b]);
        },
      });
    },
  };
}
