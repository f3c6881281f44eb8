/**
 * @file Central finite differences in f64 over plain-JS functions. Tests differentiate an
 * independent f64 implementation of a function this way and compare with the engine's
 * (f32) vjp/jvp, so the reference carries no f32 rounding: with h = 1e-6·max(1, |x|) the
 * truncation error is O(h²·f‴) ≈ 1e-12 and the rounding error O(ε₆₄·|f|/h) ≈ 1e-10·|f|.
 * @module
 */

/** Step for coordinate value `x`. */
function step(x: number, eps: number): number {
  return eps * Math.max(1, Math.abs(x));
}

/**
 * Gradient of a scalar function of several f64 arrays by central differences.
 *
 * @example
 * ```ts
 * import { fdGrad } from "./_fd.ts";
 * const [g] = fdGrad((xs) => xs[0]![0]! ** 2, [Float64Array.of(3)]);
 * if (Math.abs(g![0]! - 6) > 1e-6) throw new Error("bad");
 * ```
 */
export function fdGrad(
  f: (xs: Float64Array[]) => number,
  xs: readonly Float64Array[],
  eps = 1e-6,
): Float64Array[] {
  const cur = xs.map((x) => Float64Array.from(x));
  return cur.map((x) => {
    const g = new Float64Array(x.length);
    for (let i = 0; i < x.length; i++) {
      const x0 = x[i]!, h = step(x0, eps);
      x[i] = x0 + h;
      const fp = f(cur);
      x[i] = x0 - h;
      const fm = f(cur);
      x[i] = x0;
      g[i] = (fp - fm) / (2 * h);
    }
    return g;
  });
}

/**
 * Directional derivative d/dε f(xs + ε·vs) at ε = 0 of a vector function, by central
 * differences.
 *
 * @example
 * ```ts
 * import { fdJvp } from "./_fd.ts";
 * const d = fdJvp((xs) => xs[0]!.map((v) => v * v), [Float64Array.of(1, 2)], [Float64Array.of(1, 1)]);
 * if (Math.abs(d[1]! - 4) > 1e-6) throw new Error("bad");
 * ```
 */
export function fdJvp(
  f: (xs: Float64Array[]) => Float64Array,
  xs: readonly Float64Array[],
  vs: readonly Float64Array[],
  eps = 1e-6,
): Float64Array {
  const scale = Math.max(1, ...xs.map((x) => x.reduce((a, v) => Math.max(a, Math.abs(v)), 0)));
  const h = eps * scale;
  const plus = xs.map((x, j) => x.map((v, i) => v + h * vs[j]![i]!));
  const minus = xs.map((x, j) => x.map((v, i) => v - h * vs[j]![i]!));
  const fp = f(plus), fm = f(minus);
  return fp.map((v, i) => (v - fm[i]!) / (2 * h));
}

/** Σ a·b in f64. */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}
