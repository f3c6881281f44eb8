/**
 * @file WGSL code generation for fused elementwise expressions (`Expr` DAGs of lib/ir.ts):
 * one statement per node, each op's text taken from its row of the op table, so every
 * kernel that evaluates expressions (elementwise maps, grouped optimizer updates, matmul
 * epilogues) computes exactly what the CPU backend computes node by node.
 * @module
 */
import { binaryRow, type Expr, unaryRow } from "../lib/ir.ts";
import { pf } from "./common.ts";
import { captureHooks, type Dyn } from "../lib/capture.ts";

/** The WGSL of an expression DAG. */
export interface EmittedExpr {
  /** Statements computing every node from `in0..in{n−1}` (which the caller declares). */
  body: string;
  /** One WGSL expression (a variable or an input name) per output. */
  outs: string[];
  /** The scalars (constants, unary p0/p1) in parameter-word order; empty when inlined. */
  scalars: number[];
  /** Per scalar, its per-step recomputation when the constant is dynamic (lib/capture.ts). */
  scalarDyn: (Dyn | undefined)[];
  /** Whether a node calls a function of `WGSL_HELPERS` (the kernel must include them). */
  callsHelpers: boolean;
  /**
   * Whether a node calls a long helper (erf_, tanh_, pow_, …; not the bit test isnan_): callers
   * that would inline the body many times (matmul stores) loop instead, to keep compile
   * times low.
   */
  heavy: boolean;
}

const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);

/**
 * WGSL for a fused DAG. By default every scalar (constants, unary p0/p1) is read from the
 * parameter words `base, base+1, …` instead of inlined into the source: the source, and so
 * the pipeline, then depends only on the DAG's structure, so an optimizer whose step size or
 * bias correction changes every step reuses one pipeline instead of compiling one per step.
 * With `inline`, scalars are written as exact bit-pattern literals instead (for kernels
 * without a parameter-word uniform).
 *
 * @example
 * ```ts
 * import { emitExpr } from "./expr.ts";
 * const e = emitExpr([{ kind: "unary", op: "exp", x: { kind: "input", index: 0 }, p0: 0, p1: 0 }], {
 *   base: 3,
 * });
 * if (!e.body.includes("exp(x)") || e.scalars.length !== 2) throw new Error("bad");
 * ```
 */
export function emitExpr(
  outputs: readonly Expr[],
  opts: { base?: number; inline?: boolean } = {},
): EmittedExpr {
  const base = opts.base ?? 0;
  const names = new Map<Expr, string>();
  const lines: string[] = [];
  const scalars: number[] = [];
  const scalarDyn: (Dyn | undefined)[] = [];
  let next = 0, callsHelpers = false, heavy = false;
  const scalar = (v: number, dyn?: Dyn) => {
    if (opts.inline) {
      // A dynamic constant cannot be written into the source: a replay could not update it.
      if (dyn) captureHooks()?.refuse("a per-step constant was inlined into a kernel's source");
      f32[0] = v;
      return `bitcast<f32>(0x${u32[0]!.toString(16)}u)`;
    }
    scalars.push(v);
    scalarDyn.push(dyn);
    return pf(base + scalars.length - 1);
  };
  const op = (wgsl: string) => {
    if (/\w_\(/.test(wgsl)) callsHelpers = true;
    // isnan_ is a bit test, as cheap as an inline expression; the others are long.
    if (/\b(?!isnan_\()\w+_\(/.test(wgsl)) heavy = true;
    return wgsl;
  };
  const visit = (e: Expr): string => {
    const have = names.get(e);
    if (have) return have;
    let line: string;
    let name: string;
    switch (e.kind) {
      case "input":
        return `in${e.index}`;
      case "const":
        name = `v${next++}`;
        line = `let ${name}: f32 = ${scalar(e.value, e.dyn)};`;
        break;
      case "unary": {
        const x = visit(e.x);
        const w = op(unaryRow(e.op).wgsl);
        name = `v${next++}`;
        line = `var ${name}: f32; { let x = ${x}; let p0 = ${scalar(e.p0)}; let p1 = ${
          scalar(e.p1)
        }; ${name} = ${w}; }`;
        break;
      }
      case "binary": {
        const a = visit(e.a), b = visit(e.b);
        const w = op(binaryRow(e.op).wgsl);
        name = `v${next++}`;
        line = `var ${name}: f32; { let a = ${a}; let b = ${b}; ${name} = ${w}; }`;
        break;
      }
      case "where": {
        const c = visit(e.c), a = visit(e.a), b = visit(e.b);
        name = `v${next++}`;
        // Nonzero on the bits: a NaN condition picks `a`, as on the CPU (WGSL compilers may
        // assume comparisons never see NaN).
        line = `let ${name}: f32 = select(${b}, ${a}, (bitcast<u32>(${c}) & 0x7fffffffu) != 0u);`;
        break;
      }
    }
    names.set(e, name);
    lines.push(line);
    return name;
  };
  const outs = outputs.map(visit);
  return { body: lines.join("\n"), outs, scalars, scalarDyn, callsHelpers, heavy };
}
