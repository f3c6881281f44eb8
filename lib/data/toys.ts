/**
 * @file 2-D toy distributions (8 Gaussians, moons, checkerboard, spirals) drawn on the host
 * from a seeded generator, so they are identical on every backend.
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { tensor } from "../ops/ops.ts";
import { Generator } from "../random.ts";
import { checkChoice, checkInt, checkNumber } from "../_util.ts";

/** Host normals by Box–Muller from the generator's uniform stream. */
function normalsHost(gen: Generator, n: number): Float64Array {
  const u = gen.uniformHost(2 * Math.ceil(n / 2));
  const out = new Float64Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - u[i]!)), th = 2 * Math.PI * u[i + 1]!;
    out[i] = r * Math.cos(th);
    if (i + 1 < n) out[i + 1] = r * Math.sin(th);
  }
  return out;
}

function genOf(g: Generator | undefined): Generator {
  return g ?? new Generator(0);
}

/** Options shared by the toy generators. */
export interface ToyOptions {
  /** Random stream (default: a fresh `Generator(0)`, so unseeded calls are reproducible). */
  generator?: Generator;
}

/**
 * Eight Gaussians on a circle (TC `sample_8gaussians`): centres scale·(±1, 0), (0, ±1),
 * (±1/√2, ±1/√2). TC calls this "scale 5, var 0.1" but passes √var·I as the covariance, so the
 * per-axis std is 0.1^¼ ≈ 0.562; that is the default `std` here. Returns [n, 2].
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { eightGaussians, Generator } from "../../mod.ts";
 * const x = await eightGaussians(16, { generator: new Generator(0) }).data();
 * // Centres at radius 5 (scale) on 8 directions, std 0.1^(1/4) ≈ 0.56: every point is
 * // within 6 std of radius 5.
 * for (let i = 0; i < 16; i++) {
 *   assert.ok(Math.abs(Math.hypot(x[2 * i]!, x[2 * i + 1]!) - 5) < 6 * 0.1 ** 0.25);
 * }
 * ```
 */
export function eightGaussians(
  n: number,
  opts: ToyOptions & { scale?: number; std?: number } = {},
): Tensor {
  checkInt("number of samples", n, 1);
  const scale = checkNumber("8-Gaussians scale", opts.scale ?? 5, 0);
  const std = checkNumber("8-Gaussians std", opts.std ?? Math.pow(0.1, 0.25), 0);
  const gen = genOf(opts.generator);
  const s = Math.SQRT1_2;
  const centers = [[1, 0], [-1, 0], [0, 1], [0, -1], [s, s], [s, -s], [-s, s], [-s, -s]];
  const u = gen.uniformHost(n), z = normalsHost(gen, 2 * n);
  const out = new Float32Array(2 * n);
  for (let i = 0; i < n; i++) {
    const c = centers[Math.min(7, Math.floor(u[i]! * 8))]!;
    out[2 * i] = scale * c[0]! + std * z[2 * i]!;
    out[2 * i + 1] = scale * c[1]! + std * z[2 * i + 1]!;
  }
  return tensor(out, [n, 2]);
}

/**
 * Two interleaving half-moons (sklearn `make_moons` with a random angle instead of a linspace,
 * plus Gaussian noise), mapped by TC's `sample_moons` affine 3x − 1. Without noise the points lie
 * in [−4, 5] × [−2.5, 2]. Returns [n, 2].
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Generator, moons } from "../../mod.ts";
 * const x = await moons(16, { noise: 0, generator: new Generator(0) }).data();
 * // Without noise each point is 3·p − 1 with p on the unit upper arc around (0, 0) or the
 * // lower arc around (1, 0.5).
 * for (let i = 0; i < 16; i++) {
 *   const px = (x[2 * i]! + 1) / 3, py = (x[2 * i + 1]! + 1) / 3;
 *   const outer = Math.hypot(px, py), inner = Math.hypot(px - 1, py - 0.5);
 *   assert.ok(Math.abs(outer - 1) < 1e-5 || Math.abs(inner - 1) < 1e-5);
 * }
 * ```
 */
export function moons(n: number, opts: ToyOptions & { noise?: number } = {}): Tensor {
  checkInt("number of samples", n, 1);
  const noise = checkNumber("moons noise", opts.noise ?? 0.2, 0);
  const gen = genOf(opts.generator);
  const u = gen.uniformHost(2 * n), z = normalsHost(gen, 2 * n);
  const out = new Float32Array(2 * n);
  for (let i = 0; i < n; i++) {
    const th = Math.PI * u[2 * i]!;
    const outer = u[2 * i + 1]! < 0.5;
    const x = outer ? Math.cos(th) : 1 - Math.cos(th);
    const y = outer ? Math.sin(th) : 0.5 - Math.sin(th);
    out[2 * i] = 3 * (x + noise * z[2 * i]!) - 1;
    out[2 * i + 1] = 3 * (y + noise * z[2 * i + 1]!) - 1;
  }
  return tensor(out, [n, 2]);
}

/**
 * Seed 004's checkerboard: uniform on the 8 cells (i + j even) of a 4×4 board on [−2, 2]²,
 * where cell (i, j) = (⌊x⌋ + 2, ⌊y⌋ + 2) (FB's construction). Returns [n, 2].
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { checkerboard, Generator } from "../../mod.ts";
 * const x = await checkerboard(16, { generator: new Generator(0) }).data();
 * // Points fill the dark squares of a 4×4 board on [−2, 2]²: ⌊x⌋ + ⌊y⌋ is even.
 * for (let i = 0; i < 16; i++) {
 *   const a = x[2 * i]!, b = x[2 * i + 1]!;
 *   assert.ok(Math.abs(a) <= 2 && Math.abs(b) <= 2);
 *   assert.equal((Math.floor(a) + Math.floor(b)) % 2 === 0, true);
 * }
 * ```
 */
export function checkerboard(n: number, opts: ToyOptions = {}): Tensor {
  checkInt("number of samples", n, 1);
  const gen = genOf(opts.generator);
  const u = gen.uniformHost(4 * n);
  const out = new Float32Array(2 * n);
  for (let i = 0; i < n; i++) {
    const x = 4 * u[4 * i]! - 2;
    // y in [−2, −1) ∪ [0, 1), shifted up by one cell when ⌊x⌋ is odd: ⌊x⌋ + ⌊y⌋ stays even.
    const y = u[4 * i + 1]! - 2 * Math.floor(u[4 * i + 2]! * 2) + (((Math.floor(x) % 2) + 2) % 2);
    out[2 * i] = x;
    out[2 * i + 1] = y;
  }
  return tensor(out, [n, 2]);
}

/**
 * Two spirals (FFJORD's `2spirals`): r = √u·540°, arm (−r cos r, r sin r) + U[0, 0.5)² jitter or
 * its mirror, divided by 3, plus N(0, 0.1²) noise. Returns [n, 2].
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Generator, spirals } from "../../mod.ts";
 * const x = spirals(16, { generator: new Generator(0) });
 * assert.deepEqual([...x.shape], [16, 2]);
 * // The arm radius is at most 3π (540°), over 3, plus the 0.5 jitter and noise.
 * assert.ok((await x.data()).every((v) => Math.abs(v) < (3 * Math.PI + 0.5) / 3 + 1));
 * ```
 */
export function spirals(n: number, opts: ToyOptions & { noise?: number } = {}): Tensor {
  checkInt("number of samples", n, 1);
  const noise = checkNumber("spirals noise", opts.noise ?? 0.1, 0);
  const gen = genOf(opts.generator);
  const u = gen.uniformHost(4 * n), z = normalsHost(gen, 2 * n);
  const out = new Float32Array(2 * n);
  for (let i = 0; i < n; i++) {
    const r = (Math.sqrt(u[4 * i]!) * 540 * 2 * Math.PI) / 360;
    const sgn = u[4 * i + 3]! < 0.5 ? 1 : -1;
    const x = -Math.cos(r) * r + u[4 * i + 1]! * 0.5;
    const y = Math.sin(r) * r + u[4 * i + 2]! * 0.5;
    out[2 * i] = (sgn * x) / 3 + noise * z[2 * i]!;
    out[2 * i + 1] = (sgn * y) / 3 + noise * z[2 * i + 1]!;
  }
  return tensor(out, [n, 2]);
}

/** A standard 2-D Gaussian, the usual source of the toys (named for `sampleToy`). */
function gaussian(n: number, opts: ToyOptions = {}): Tensor {
  checkInt("number of samples", n, 1);
  return tensor(Float32Array.from(normalsHost(genOf(opts.generator), 2 * n)), [n, 2]);
}

/**
 * Toy names accepted by {@link sampleToy} (for CLI flags).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { TOY_NAMES } from "../../mod.ts";
 * assert.deepEqual([...TOY_NAMES], ["8gaussians", "moons", "checkerboard", "spirals", "gaussian"]);
 * ```
 */
export const TOY_NAMES = ["8gaussians", "moons", "checkerboard", "spirals", "gaussian"] as const;

/** A toy name. */
export type ToyName = (typeof TOY_NAMES)[number];

/**
 * Draw n samples [n, 2] from a named toy with its default parameters.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { checkerboard, Generator, sampleToy } from "../../mod.ts";
 * const x = sampleToy("checkerboard", 32, new Generator(1));
 * // the same draws as calling the generator directly
 * assert.deepEqual([...await x.data()], [...await checkerboard(32, { generator: new Generator(1) }).data()]);
 * assert.throws(() => sampleToy("circles", 4), /toy/);
 * ```
 */
export function sampleToy(name: string, n: number, generator?: Generator): Tensor {
  const toy = checkChoice("toy", name, TOY_NAMES);
  const o = { generator };
  switch (toy) {
    case "8gaussians":
      return eightGaussians(n, o);
    case "moons":
      return moons(n, o);
    case "checkerboard":
      return checkerboard(n, o);
    case "spirals":
      return spirals(n, o);
    case "gaussian":
      return gaussian(n, o);
  }
}
