/**
 * The `wasm` backend's random streams (kernels/wasm_random.ts) against lib/philox.ts's
 * `randomStream`, the CPU backend's, bit for bit: every kind, sizes around the kernel's groups
 * (4 blocks: 8 normals, 16 uniforms) and a DiT step's 50,176, keys and counters whose low word
 * wraps (and carries) or whose high word wraps too, on one thread and split across two (in
 * chunks, so the kernel starts mid-stream), with outputs in the shared memory or copied out of
 * it. A normal the kernel cannot round for certain is left NaN and listed, and the backend fills
 * it in; the kernel's two f64 factors stay within the margin that decision assumes.
 */
import { strict as assert } from "node:assert";
import { createWasmBackend, type WasmBackend } from "../../lib/backend/wasm.ts";
import { type RandomKind, type RandomState, randomStream } from "../../lib/philox.ts";
import {
  RANDOM_CONST_WORDS,
  RANDOM_EPS,
  randomFactorsModule,
  randomModule,
} from "../../kernels/wasm_random.ts";
import { rng } from "../_ref.ts";

const KINDS: RandomKind[] = ["bits", "uniform", "normal"];
const words = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);

function states(): RandomState[] {
  const r = rng(17);
  const u32 = () => Math.floor(r() * 2 ** 32) >>> 0;
  const out: RandomState[] = [
    { key: [0, 0], counter: [0, 0] },
    { key: [1, 2], counter: [0xfffffff0, 3] }, // the low word wraps inside a stream: a carry
    { key: [0xdeadbeef, 0xffffffff], counter: [0xffffffff, 0xffffffff] }, // both words wrap
    { key: [7, 0], counter: [0xffffffff - 20000, 0] }, // wraps inside a split call's chunks
  ];
  for (let i = 0; i < 8; i++) out.push({ key: [u32(), u32()], counter: [u32(), u32()] });
  return out;
}

const SIZES = [1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 63, 65, 1000, 50176];

// One thread; two with every call split (chunks of 512 normals or 4096 uniforms); two as
// configured by default (50,176 normals split, uniforms not); outputs past the arena (copied
// out of the call's scratch, with a group's overrun in it).
const VARIANTS = [
  { name: "1 thread", threads: 1 },
  { name: "2 threads, every call split", threads: 2, elementwiseSplitWork: 0 },
  { name: "2 threads", threads: 2 },
  { name: "2 threads, split, no arena", threads: 2, elementwiseSplitWork: 0, arenaBytes: 0 },
];

for (const { name, ...opts } of VARIANTS) {
  Deno.test(`wasm random (${name}): every kind and size is randomStream's, bit for bit`, async () => {
    const be: WasmBackend = await createWasmBackend(opts);
    try {
      for (const st of states()) {
        for (const kind of KINDS) {
          for (const size of SIZES) {
            const s = be.random(kind, size, st);
            const got = words(be.readSync(s));
            const want = words(randomStream(kind, size, st));
            const what = `${kind} ${size} key ${st.key} counter ${st.counter}`;
            assert.equal(got.length, size, what);
            for (let i = 0; i < size; i++) {
              if (got[i] !== want[i]) {
                assert.fail(`${what} [${i}]: ${got[i]!.toString(16)} vs ${want[i]!.toString(16)}`);
              }
            }
            be.free(s);
          }
        }
      }
    } finally {
      be.close();
    }
  });
}

function instance(bytes: Uint8Array, mem: WebAssembly.Memory): (...a: number[]) => void {
  return new WebAssembly.Instance(new WebAssembly.Module(bytes as BufferSource), {
    env: { mem },
  }).exports.k as (...a: number[]) => void;
}

Deno.test("wasm random kernel: a call from element s (a multiple of 4) writes elements s, s + 1, …", () => {
  const mem = new WebAssembly.Memory({ initial: 1, maximum: 16, shared: true });
  const i32 = new Int32Array(mem.buffer), f32 = new Float32Array(mem.buffer);
  const st: RandomState = { key: [5, 6], counter: [0xfffffffa, 1] };
  for (const kind of KINDS) {
    const k = instance(randomModule(kind), mem);
    const want = words(randomStream(kind, 80, st));
    for (const [s, n] of [[4, 1], [4, 9], [12, 17], [36, 40], [0, 80]]) {
      i32.set([...st.key, ...st.counter, 0, 16]);
      f32.fill(0, 64, 64 + 100);
      k(256, 4 * s!, 0, 1, n!);
      const got = words(f32.subarray(64, 64 + n!));
      assert.deepEqual([...got], [...want.subarray(s!, s! + n!)], `${kind} from ${s}, ${n}`);
    }
  }
});

Deno.test("wasm random: a normal the kernel cannot round for certain is left NaN and listed; the backend recomputes it", async () => {
  // Element 5 of this stream (block 26060, words 2 and 3): its f64 value lies within 2^-44 of
  // the midpoint between two f32s (found by a scan, key [123456, 99]).
  const st: RandomState = { key: [123456, 99], counter: [26058, 0] };
  const mem = new WebAssembly.Memory({ initial: 1, maximum: 16, shared: true });
  const i32 = new Int32Array(mem.buffer), f32 = new Float32Array(mem.buffer);
  i32.set([...st.key, ...st.counter, 0, 4]);
  instance(randomModule("normal"), mem)(256, 0, 0, 1, 9);
  assert.equal(i32[4], 1, "one normal flagged");
  assert.equal(i32[RANDOM_CONST_WORDS], 5, "element 5");
  const want = randomStream("normal", 9, st);
  for (let i = 0; i < 9; i++) {
    if (i === 5) assert.ok(Number.isNaN(f32[64 + i]), "the flagged element is left NaN");
    else assert.equal(f32[64 + i], want[i], `[${i}]`);
  }
  // The element's f32 neighbours: the value sits near a rounding boundary.
  const v = want[5]!;
  assert.ok(Number.isFinite(v) && v !== 0);
  for (const threads of [1, 2]) {
    const be = await createWasmBackend({ threads, elementwiseSplitWork: 0 });
    try {
      // Alone, and inside a long split stream (the element at 2·26058 + 5 from counter 0).
      assert.deepEqual(be.readSync(be.random("normal", 9, st)), want);
      const long = { key: st.key, counter: [0, 0] } as const;
      const got = be.readSync(be.random("normal", 60000, long));
      assert.equal(got[2 * 26058 + 5], v);
      assert.deepEqual(words(got), words(randomStream("normal", 60000, long)));
    } finally {
      be.close();
    }
  }
});

Deno.test("wasm random kernel: sqrt(−2·log u1) and cos(2π·u2) within 2^-51 of Math's (the margin 2^-44 rests on it)", () => {
  // A strided sample of the 2^24 values of each (bench/random_factors.ts runs all: ≤ 1 ulp).
  const mem = new WebAssembly.Memory({ initial: 64, maximum: 1024, shared: true });
  const k = instance(randomFactorsModule(), mem);
  const n = 1 << 16, stride = 255, u = new Uint32Array(mem.buffer);
  const out = new Float64Array(mem.buffer, 8 * n, 3 * n);
  for (let i = 0; i < n; i++) u[i] = u[n + i] = (((i * stride) % (1 << 24)) << 8) >>> 0;
  u[0] = u[n] = 0xffffff00; // u1 = 1: −0; u2 = 1 − 2^-24
  k(0, 4 * n, 8 * n, n);
  let worst = 0;
  for (let i = 0; i < n; i++) {
    const m = u[i]! >>> 8, j = i >> 1, l = i & 1;
    const r = out[6 * j + l]!, c = out[6 * j + 2 + l]!, p = out[6 * j + 4 + l]!;
    const rj = Math.sqrt(-2 * Math.log((m + 1) / 2 ** 24)),
      cj = Math.cos(2 * Math.PI * m / 2 ** 24);
    if (rj === 0) assert.ok(Object.is(r, rj), `sqrt(−2·log 1) is ${rj}, got ${r}`);
    else worst = Math.max(worst, Math.abs(r - rj) / rj);
    worst = Math.max(worst, Math.abs(c - cj) / Math.abs(cj));
    assert.ok(Object.is(p, r * c), "the product of the two");
  }
  assert.ok(worst <= 2 ** -51, `largest relative difference ${worst}`);
  assert.ok(worst * 64 < RANDOM_EPS);
});
