/**
 * @file The pieces of the WebAssembly binary format the run-time kernels are written with
 * (lib/backend/wasm_jit.ts's elementwise kernels, kernels/wasm_random.ts's Philox): LEB128
 * integers and sections. Kernels assembled at run time, where the WAT of kernels/wasm_gemm.ts is
 * assembled ahead of time by wabt, so the library needs no assembler.
 * @module
 */

/**
 * Append `v` (an unsigned 32-bit integer) as unsigned LEB128.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { uleb } from "./wasm_encode.ts";
 * const out: number[] = [];
 * uleb(out, 624485);
 * assert.deepEqual(out, [0xe5, 0x8e, 0x26]); // the LEB128 article's example
 * ```
 */
export function uleb(out: number[], v: number): void {
  do {
    let b = v & 0x7f;
    v >>>= 7;
    if (v) b |= 0x80;
    out.push(b);
  } while (v);
}

/**
 * Append `v` (a signed 32-bit integer) as signed LEB128.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { sleb } from "./wasm_encode.ts";
 * const out: number[] = [];
 * sleb(out, -123456);
 * assert.deepEqual(out, [0xc0, 0xbb, 0x78]); // the LEB128 article's example
 * ```
 */
export function sleb(out: number[], v: number): void {
  for (;;) {
    const b = v & 0x7f;
    v >>= 7;
    if ((v === 0 && !(b & 0x40)) || (v === -1 && (b & 0x40))) {
      out.push(b);
      return;
    }
    out.push(b | 0x80);
  }
}

/**
 * Append a module section: its id, its body's length, its body.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { section } from "./wasm_encode.ts";
 * const out: number[] = [];
 * section(out, 3, [1, 0]); // a function section: one function of type 0
 * assert.deepEqual(out, [3, 2, 1, 0]);
 * ```
 */
export function section(out: number[], id: number, body: number[]): void {
  out.push(id);
  uleb(out, body.length);
  out.push(...body);
}
