/**
 * @file Shared test helpers: closeness assertions and backend availability.
 * @module
 */
import { AssertionError } from "node:assert";
import {
  type Backend,
  backendByName,
  type BackendName,
  type BinaryOp,
  getBackend,
  hasBackend,
  init,
  setBackend,
  type UnaryOp,
} from "../mod.ts";
import type { Storage } from "../lib/backend/backend.ts";

// Select the default backend as an application would (WebGPU when an adapter exists, or
// FLOWGPU_BACKEND): test files that import these helpers run on it unless they switch.
await init();
// The wasm backend too, for tests that run on every backend; the default stays selected.
{
  const current = getBackend().name;
  await init({ backend: "wasm" }).catch(() => {});
  setBackend(current);
}

/** Whether the WebGPU backend initialised (tests that need it use `ignore: !HAS_WEBGPU`). */
export const HAS_WEBGPU: boolean = hasBackend("webgpu");

/** Whether the wasm backend started (WebAssembly SIMD and shared memory). */
export const HAS_WASM: boolean = hasBackend("wasm");

/** Every backend available here, the CPU reference first. */
export const BACKENDS_HERE: BackendName[] = [
  "cpu",
  ...(HAS_WASM ? ["wasm" as const] : []),
  ...(HAS_WEBGPU ? ["webgpu" as const] : []),
];

/** The CPU backend. */
export const CPU = backendByName("cpu")!;

/**
 * Assert |actual − expected| <= atol + rtol·|expected| elementwise, with a message naming
 * the first offending index. NaNs must match NaNs.
 */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  opts: { rtol?: number; atol?: number; msg?: string } = {},
): void {
  const rtol = opts.rtol ?? 1e-5, atol = opts.atol ?? 1e-6;
  const pre = opts.msg ? `${opts.msg}: ` : "";
  if (actual.length !== expected.length) {
    throw new AssertionError({
      message: `${pre}length ${actual.length} != expected ${expected.length}`,
    });
  }
  let worst = -1, worstErr = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!, e = expected[i]!;
    if (Number.isNaN(e) && Number.isNaN(a)) continue;
    if (e === a) continue;
    const err = Math.abs(a - e) - (atol + rtol * Math.abs(e));
    if (!(err <= 0) && (worst < 0 || err > worstErr || Number.isNaN(err))) {
      worst = i;
      worstErr = Number.isNaN(err) ? Infinity : err;
    }
  }
  if (worst >= 0) {
    throw new AssertionError({
      message: `${pre}element ${worst}: got ${actual[worst]}, expected ${
        expected[worst]
      } (rtol ${rtol}, atol ${atol})`,
    });
  }
}

const X0 = { kind: "input", index: 0 } as const;
const X1 = { kind: "input", index: 1 } as const;
const X2 = { kind: "input", index: 2 } as const;

/** One unary op of the table on a contiguous storage, through `Backend.elementwise`. */
export function unaryOn(be: Backend, op: UnaryOp, x: Storage, p0 = 0, p1 = 0): Storage {
  return be.elementwise([{ kind: "unary", op, x: X0, p0, p1 }], [x], [[1]], [x.size])[0]!;
}

/** One binary op of the table over strided operands, through `Backend.elementwise`. */
export function binaryOn(
  be: Backend,
  op: BinaryOp,
  a: Storage,
  aStrides: readonly number[],
  b: Storage,
  bStrides: readonly number[],
  shape: readonly number[],
): Storage {
  return be.elementwise(
    [{ kind: "binary", op, a: X0, b: X1 }],
    [a, b],
    [aStrides, bStrides],
    shape,
  )[
    0
  ]!;
}

/** `c ? a : b` over strided operands, through `Backend.elementwise`. */
export function whereOn(
  be: Backend,
  c: Storage,
  cStrides: readonly number[],
  a: Storage,
  aStrides: readonly number[],
  b: Storage,
  bStrides: readonly number[],
  shape: readonly number[],
): Storage {
  return be.elementwise(
    [{ kind: "where", c: X0, a: X1, b: X2 }],
    [c, a, b],
    [cStrides, aStrides, bStrides],
    shape,
  )[0]!;
}

/**
 * Run `fn` with `console.log`, `console.error` and `console.warn` silenced (a task's progress
 * lines), restoring them however it ends.
 */
export async function quiet<T>(fn: () => Promise<T>): Promise<T> {
  const { log, error, warn } = console;
  console.log = console.error = console.warn = () => {};
  try {
    return await fn();
  } finally {
    Object.assign(console, { log, error, warn });
  }
}
