/**
 * @file Shared test helpers: closeness assertions and backend availability.
 * @module
 */
import { AssertionError } from "node:assert";
import { backendByName, hasBackend } from "../mod.ts";

/** Whether the WebGPU backend initialised (tests that need it use `ignore: !HAS_WEBGPU`). */
export const HAS_WEBGPU: boolean = hasBackend("webgpu");

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
