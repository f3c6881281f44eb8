/**
 * @file lib/io file formats: safetensors, NumPy .npy/.npz (against NumPy-written
 * fixtures), atomic writes, PNG (against an independent Python encoder's fixtures), GIF
 * (decoded by an independent LZW decoder below), run directories and progress output.
 * @module
 */
import { strict as assert } from "node:assert";
import {
  atomicWrite,
  bf16ToF32,
  createRun,
  decodeNpy,
  decodeNpz,
  decodePng,
  decodeSafetensors,
  decodeSafetensorsWithMetadata,
  encodeNpy,
  encodeNpz,
  encodePng,
  encodeSafetensors,
  f16ToF32,
  FileFormatError,
  loadNpy,
  loadNpz,
  loadSafetensors,
  openRun,
  Progress,
  readMetrics,
  saveNpz,
  saveSafetensors,
  tensor,
  toRgba,
  toUint8Nhwc,
} from "../../mod.ts";
import { crc32 } from "../../lib/formats/_bytes.ts";
import { encodeGif, imageGrid } from "../../viz/mod.ts";
import { assertClose } from "../_helpers.ts";

const FIX = new URL("../testdata/io/", import.meta.url);
const fixture = (name: string) => Deno.readFile(new URL(name, FIX));
const fortranBytes = await fixture("fortran_2x3.npy");

function le64(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
  return b;
}

/** A safetensors file assembled by hand from a header object and a data section. */
function rawSafetensors(header: unknown, data: Uint8Array, headerText?: string): Uint8Array {
  const json = new TextEncoder().encode(headerText ?? JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  out.set(le64(json.length));
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

function expectFormatError(fn: () => unknown, ...parts: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof FileFormatError, `expected FileFormatError, got ${e}`);
    assert.ok(e instanceof RangeError);
    for (const p of parts) assert.ok(e.message.includes(p), `"${e.message}" lacks "${p}"`);
    return true;
  });
}

async function expectFormatErrorAsync(p: Promise<unknown>, ...parts: string[]): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof FileFormatError, `expected FileFormatError, got ${e}`);
    for (const x of parts) {
      assert.ok((e as Error).message.includes(x), `"${(e as Error).message}" lacks "${x}"`);
    }
    return true;
  });
}

// ---------------------------------------------------------------- safetensors

Deno.test("encodeSafetensors writes the spec layout: u64 header length, 8-aligned JSON, raw f32", () => {
  const w = new Float32Array([1, -2.5, 3, 4, 5, 6]);
  const b = new Float32Array([0.25]);
  const bytes = encodeSafetensors({ w: { shape: [2, 3], data: w }, b: { shape: [1], data: b } }, {
    note: "hi",
  });
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal(n % 8, 0);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  assert.deepEqual(header.__metadata__, { note: "hi" });
  assert.deepEqual(header.w, { dtype: "F32", shape: [2, 3], data_offsets: [0, 24] });
  assert.deepEqual(header.b, { dtype: "F32", shape: [1], data_offsets: [24, 28] });
  assert.equal(bytes.length, 8 + n + 28);
  const body = new DataView(bytes.buffer, 8 + n);
  for (let i = 0; i < 6; i++) assert.equal(body.getFloat32(4 * i, true), w[i]);
  assert.equal(body.getFloat32(24, true), 0.25);
  const back = decodeSafetensorsWithMetadata(bytes);
  assert.deepEqual(back.metadata, { note: "hi" });
  assert.deepEqual(Array.from(back.tensors.w!.data), Array.from(w));
  assert.deepEqual(back.tensors.w!.shape, [2, 3]);
});

Deno.test("f16ToF32 and bf16ToF32 match the IEEE bit patterns", () => {
  const f16: [number, number][] = [
    [0x3c00, 1],
    [0xc000, -2],
    [0x3555, 0.333251953125],
    [0x7bff, 65504],
    [0x0001, 2 ** -24],
    [0x0400, 2 ** -14],
    [0x8000, -0],
    [0x7c00, Infinity],
    [0xfc00, -Infinity],
  ];
  for (const [h, v] of f16) assert.equal(f16ToF32(h), v, `f16 0x${h.toString(16)}`);
  assert.ok(Number.isNaN(f16ToF32(0x7e00)));
  const bf: [number, number][] = [[0x3f80, 1], [0x4049, 3.140625], [0xc2f7, -123.5], [0x0000, 0]];
  for (const [h, v] of bf) assert.equal(bf16ToF32(h), v, `bf16 0x${h.toString(16)}`);
});

Deno.test("decodeSafetensors reads hand-built F16, BF16, F64 and I64 tensors", () => {
  const data = new Uint8Array(6 + 4 + 16 + 16);
  const dv = new DataView(data.buffer);
  [0x3c00, 0xc000, 0x3555].forEach((h, i) => dv.setUint16(2 * i, h, true));
  [0x3f80, 0xc2f7].forEach((h, i) => dv.setUint16(6 + 2 * i, h, true));
  dv.setFloat64(10, 0.1, true);
  dv.setFloat64(18, -1e10, true);
  dv.setBigInt64(26, -5n, true);
  dv.setBigInt64(34, 123456n, true);
  const header = {
    __metadata__: { format: "pt" },
    h: { dtype: "F16", shape: [3], data_offsets: [0, 6] },
    bf: { dtype: "BF16", shape: [1, 2], data_offsets: [6, 10] },
    d: { dtype: "F64", shape: [2], data_offsets: [10, 26] },
    l: { dtype: "I64", shape: [2], data_offsets: [26, 42] },
  };
  const t = decodeSafetensors(rawSafetensors(header, data));
  assert.equal(t.h!.dtype, "F16");
  assertClose(t.h!.data, [1, -2, 0.333251953125]);
  assertClose(t.bf!.data, [1, -123.5]);
  assert.deepEqual(t.bf!.shape, [1, 2]);
  assertClose(t.d!.data, [0.1, -1e10], { rtol: 1e-7 });
  assert.deepEqual(Array.from(t.l!.data), [-5, 123456]);
});

Deno.test("decodeSafetensors rejects every malformed header with an error naming file and tensor", () => {
  const f = "model.safetensors";
  const d8 = new Uint8Array(8);
  const ok = { dtype: "F32", shape: [2], data_offsets: [0, 8] };
  expectFormatError(() => decodeSafetensors(new Uint8Array(5), f), f, "too short");
  const huge = new Uint8Array(16);
  huge.set(le64(1000));
  expectFormatError(() => decodeSafetensors(huge, f), f, "header length 1000 exceeds");
  expectFormatError(
    () => decodeSafetensors(rawSafetensors(null, d8, "{not json"), f),
    f,
    "not valid JSON",
  );
  expectFormatError(() => decodeSafetensors(rawSafetensors([1, 2], d8), f), f, "JSON object");
  expectFormatError(
    () => decodeSafetensors(rawSafetensors({ w: { shape: [2], data_offsets: [0, 8] } }, d8), f),
    f,
    `"w"`,
    "missing dtype",
  );
  expectFormatError(
    () => decodeSafetensors(rawSafetensors({ w: { dtype: "F32", data_offsets: [0, 8] } }, d8), f),
    `"w"`,
    "shape",
  );
  expectFormatError(
    () => decodeSafetensors(rawSafetensors({ w: { dtype: "F32", shape: [2] } }, d8), f),
    `"w"`,
    "data_offsets",
  );
  expectFormatError(
    () => decodeSafetensors(rawSafetensors({ w: { ...ok, dtype: "F8_E4M3" } }, d8), f),
    f,
    `"w"`,
    `unknown dtype "F8_E4M3"`,
  );
  expectFormatError(
    () => decodeSafetensors(rawSafetensors({ w: { ...ok, data_offsets: [0, 16] } }, d8), f),
    f,
    `"w"`,
    "past the end",
  );
  expectFormatError(
    () => decodeSafetensors(rawSafetensors({ w: { ...ok, shape: [3] } }, d8), f),
    `"w"`,
    "needs 12 bytes but data_offsets span 8",
  );
  expectFormatError(
    () =>
      decodeSafetensors(
        rawSafetensors({ a: ok, b: { dtype: "F32", shape: [1], data_offsets: [4, 8] } }, d8),
        f,
      ),
    f,
    `"b"`,
    "overlap",
  );
  expectFormatError(
    () => decodeSafetensors(rawSafetensors({ w: { ...ok, data_offsets: [8, 0] } }, d8), f),
    `"w"`,
    "end before begin",
  );
  expectFormatError(
    () => decodeSafetensors(rawSafetensors({ __metadata__: { step: 3 }, w: ok }, d8), f),
    "__metadata__",
  );
});

Deno.test("saveSafetensors/loadSafetensors round-trip tensors through a file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const w = tensor([[1, 2, 3], [4, 5, 6]]);
    await saveSafetensors(`${dir}/m.safetensors`, { "layer.0.weight": w }, { step: "5" });
    const back = await loadSafetensors(`${dir}/m.safetensors`);
    assert.deepEqual(back["layer.0.weight"]!.shape, [2, 3]);
    assert.deepEqual(Array.from(await back["layer.0.weight"]!.data()), [1, 2, 3, 4, 5, 6]);
    const bytes = await Deno.readFile(`${dir}/m.safetensors`);
    assert.equal(decodeSafetensorsWithMetadata(bytes).metadata.step, "5");
    const truncated = `${dir}/t.safetensors`;
    await Deno.writeFile(truncated, bytes.subarray(0, bytes.length - 4));
    await expectFormatErrorAsync(
      loadSafetensors(truncated),
      truncated,
      "layer.0.weight",
      "past the end",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const netOk = Deno.permissions.querySync({ name: "net", host: "127.0.0.1" }).state === "granted";
Deno.test({
  name: "loadSafetensors fetches an http:// URL",
  ignore: !netOk,
  async fn() {
    const bytes = encodeSafetensors({ v: { shape: [3], data: new Float32Array([7, 8, 9]) } });
    const ac = new AbortController();
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
      (req) =>
        new URL(req.url).pathname === "/w.safetensors"
          ? new Response(bytes as Uint8Array<ArrayBuffer>)
          : new Response("no", { status: 404 }),
    );
    try {
      const url = `http://127.0.0.1:${server.addr.port}/w.safetensors`;
      const t = await loadSafetensors(url);
      assert.deepEqual(Array.from(await t.v!.data()), [7, 8, 9]);
      await expectFormatErrorAsync(
        loadSafetensors(`http://127.0.0.1:${server.addr.port}/x`),
        "404",
      );
    } finally {
      ac.abort();
      await server.finished;
    }
  },
});

// ---------------------------------------------------------------- npy / npz

Deno.test("decodeNpy reads NumPy-written f4, f8, i4, i8, u1, u4 and 0-d arrays", async () => {
  const f4 = decodeNpy(await fixture("f4_2x3.npy"));
  assert.equal(f4.dtype, "<f4");
  assert.deepEqual(f4.shape, [2, 3]);
  assert.deepEqual(Array.from(f4.data), [0, 1, 2, 3, 4, 5].map((i) => i * 0.5 - 1));
  const f8 = decodeNpy(await fixture("f8_4.npy"));
  assert.equal(f8.dtype, "<f8");
  assertClose(f8.data, [1.5, -2.25, 1e-3, 12345], { rtol: 1e-7 });
  const i4 = decodeNpy(await fixture("i4_2x2.npy"));
  assert.deepEqual(Array.from(i4.data), [-3, 4, 2 ** 20, -(2 ** 20)]);
  const i8 = decodeNpy(await fixture("i8_3.npy"));
  assert.equal(i8.dtype, "<i8");
  assert.deepEqual(Array.from(i8.data), [0, -7, 2 ** 24]);
  const u1 = decodeNpy(await fixture("u1_2x2x2x3.npy"));
  assert.equal(u1.dtype, "|u1");
  assert.deepEqual(u1.shape, [2, 2, 2, 3]);
  assert.deepEqual(Array.from(u1.data), Array.from({ length: 24 }, (_, i) => (i * 11) % 256));
  const u4 = decodeNpy(await fixture("u4_3.npy"));
  assert.deepEqual(Array.from(u4.data), [0, 1, Math.fround(4000000000)]);
  const s = decodeNpy(await fixture("f4_scalar.npy"));
  assert.deepEqual(s.shape, []);
  assert.deepEqual(Array.from(s.data), [2.5]);
});

Deno.test("encodeNpy output is byte-identical to np.save for <f4, |u1 and <i8", async () => {
  const f4 = await fixture("f4_2x3.npy");
  const mine = encodeNpy({ shape: [2, 3], data: new Float32Array([-1, -0.5, 0, 0.5, 1, 1.5]) });
  assert.deepEqual(mine, f4);
  const u1 = Uint8Array.from({ length: 24 }, (_, i) => (i * 11) % 256);
  assert.deepEqual(encodeNpy({ shape: [2, 2, 2, 3], data: u1 }), await fixture("u1_2x2x2x3.npy"));
  assert.deepEqual(
    encodeNpy({ shape: [3], data: [0, -7, 2 ** 24], dtype: "<i8" }),
    await fixture("i8_3.npy"),
  );
});

Deno.test("decodeNpy rejects Fortran order, bad magic, unsupported dtypes and truncation", () => {
  expectFormatError(
    () => decodeNpy(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]), "x.npy"),
    "x.npy",
    "magic",
  );
  expectFormatError(() => decodeNpy(fortranBytes, "f.npy"), "f.npy", "Fortran");
  const craft = (header: string, body = new Uint8Array(8)) => {
    const h = new TextEncoder().encode(header);
    const out = new Uint8Array(10 + h.length + body.length);
    out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
    new DataView(out.buffer).setUint16(8, h.length, true);
    out.set(h, 10);
    out.set(body, 10 + h.length);
    return out;
  };
  expectFormatError(
    () => decodeNpy(craft("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }\n"), "c.npy"),
    "c.npy",
    `unsupported .npy dtype "<c8"`,
  );
  expectFormatError(
    () =>
      decodeNpy(
        craft("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }\n"),
        "s.npy",
      ),
    "s.npy",
    "structured",
  );
  expectFormatError(
    () => decodeNpy(craft("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }\n"), "t.npy"),
    "t.npy",
    "truncated",
  );
  // A big-endian array reads correctly (NumPy can write them).
  const be = new Uint8Array(8);
  new DataView(be.buffer).setFloat32(0, 1.5, false);
  new DataView(be.buffer).setFloat32(4, -3, false);
  const a = decodeNpy(craft("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }\n", be));
  assert.deepEqual(Array.from(a.data), [1.5, -3]);
});

Deno.test("encodeNpy validates dtype, shape and integer ranges", () => {
  assert.throws(() => encodeNpy({ shape: [2], data: new Float32Array(3) }), /3/);
  assert.throws(
    () => encodeNpy({ shape: [2], data: new Float32Array([1, 256]), dtype: "|u1" }),
    /integers in \[0, 255\].*256/,
  );
  assert.throws(
    () => encodeNpy({ shape: [1], data: [1.5], dtype: "<i4" }),
    /integers.*1\.5/,
  );
  assert.throws(
    // deno-lint-ignore no-explicit-any
    () => encodeNpy({ shape: [1], data: [1], dtype: "<c8" as any }),
    /dtype to be one of/,
  );
});

Deno.test("decodeNpz reads np.savez (stored, Zip64 headers) and np.savez_compressed (deflated)", async () => {
  for (const name of ["savez.npz", "savez_compressed.npz"]) {
    const z = await decodeNpz(await fixture(name), name);
    assert.deepEqual(Object.keys(z).sort(), ["a", "arr_0", "labels"]);
    assert.deepEqual(z.a!.shape, [3, 2]);
    assert.deepEqual(Array.from(z.a!.data), [0, 1, 2, 3, 4, 5]);
    assert.equal(z.labels!.dtype, "<i8");
    assert.deepEqual(Array.from(z.labels!.data), [3, 1, 4]);
    assert.equal(z.arr_0!.dtype, "|u1");
    assert.deepEqual(z.arr_0!.shape, [2, 2, 2, 3]);
    assert.deepEqual(
      Array.from(z.arr_0!.data),
      Array.from({ length: 24 }, (_, i) => (i * 11) % 256),
    );
  }
});

Deno.test("encodeNpz writes a ZIP whose entries carry correct CRCs; corruption is detected", async () => {
  const arrays = {
    arr_0: { shape: [2, 1, 1, 3], data: new Uint8Array([0, 1, 2, 253, 254, 255]) },
    mu: { shape: [2], data: new Float32Array([0.5, -0.5]) },
  };
  const z = encodeNpz(arrays);
  // ZIP local header: signature, method 0 (stored), CRC of the member = CRC of encodeNpy.
  const dv = new DataView(z.buffer);
  assert.equal(dv.getUint32(0, true), 0x04034b50);
  assert.equal(dv.getUint16(8, true), 0);
  const member = encodeNpy(arrays.arr_0);
  assert.equal(dv.getUint32(14, true), crc32(member));
  assert.equal(new TextDecoder().decode(z.subarray(30, 30 + 9)), "arr_0.npy");
  const back = await decodeNpz(z);
  assert.deepEqual(Array.from(back.arr_0!.data), [0, 1, 2, 253, 254, 255]);
  assert.deepEqual(Array.from(back.mu!.data), [0.5, -0.5]);
  const bad = z.slice();
  bad[30 + 9 + 130] ^= 0xff; // a data byte of arr_0
  await expectFormatErrorAsync(decodeNpz(bad, "bad.npz"), "bad.npz", "arr_0.npy", "CRC");
  await expectFormatErrorAsync(decodeNpz(z.subarray(0, z.length - 30), "cut.npz"), "cut.npz");
});

Deno.test("saveNpz/loadNpz and loadNpy round-trip through files", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const img = Uint8Array.from({ length: 2 * 4 * 4 * 3 }, (_, i) => (i * 7) % 256);
    await saveNpz(`${dir}/samples.npz`, { arr_0: { shape: [2, 4, 4, 3], data: img } });
    const { arr_0 } = await loadNpz(`${dir}/samples.npz`);
    assert.deepEqual(Array.from(arr_0!.data), Array.from(img));
    await Deno.writeFile(
      `${dir}/c.npy`,
      encodeNpy({ shape: [1, 2], data: new Float32Array([3, 4]) }),
    );
    assert.deepEqual(Array.from((await loadNpy(`${dir}/c.npy`)).data), [3, 4]);
    assert.deepEqual(Array.from((await loadNpy(`file://${dir}/c.npy`)).data), [3, 4]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------- atomic writes

Deno.test("atomicWrite creates parents, replaces content, and leaves no temp files", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await atomicWrite(`${dir}/a/b/c.txt`, "one");
    await atomicWrite(`${dir}/a/b/c.txt`, new TextEncoder().encode("two"));
    assert.equal(await Deno.readTextFile(`${dir}/a/b/c.txt`), "two");
    const names = [...Deno.readDirSync(`${dir}/a/b`)].map((e) => e.name);
    assert.deepEqual(names, ["c.txt"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("atomicWrite interrupted mid-write keeps the old file and removes the partial temp", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/ckpt.bin`;
    await atomicWrite(path, "previous content");
    let sent = 0;
    const failing = new ReadableStream<Uint8Array>({
      pull(c) {
        if (sent++ < 3) c.enqueue(new Uint8Array(1024).fill(65));
        else c.error(new Error("disk unplugged"));
      },
    });
    await assert.rejects(atomicWrite(path, failing), /disk unplugged/);
    assert.equal(await Deno.readTextFile(path), "previous content");
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["ckpt.bin"]);
    // A failing rename (target is a non-empty directory) also cleans up.
    await Deno.mkdir(`${dir}/d/x`, { recursive: true });
    await assert.rejects(atomicWrite(`${dir}/d`, "data"));
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["ckpt.bin", "d"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------- PNG

Deno.test("crc32 matches the standard check value and the PNG IEND chunk CRC", () => {
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
  assert.equal(crc32(new TextEncoder().encode("IEND")), 0xae426082);
  // Continuing over pieces equals one pass.
  const all = new TextEncoder().encode("hello world");
  assert.equal(crc32(all.subarray(5), crc32(all.subarray(0, 5))), crc32(all));
});

Deno.test("encodePng → decodePng round-trips 1–4 channels and writes valid chunks", async () => {
  for (const ch of [1, 2, 3, 4] as const) {
    const w = 13, h = 5;
    const px = Uint8Array.from({ length: w * h * ch }, (_, i) => (i * 97 + ch) % 256);
    const png = await encodePng(w, h, px, { channels: ch });
    assert.deepEqual(Array.from(png.subarray(0, 8)), [137, 80, 78, 71, 13, 10, 26, 10]);
    const dv = new DataView(png.buffer);
    assert.equal(dv.getUint32(8), 13);
    assert.equal(new TextDecoder().decode(png.subarray(12, 16)), "IHDR");
    assert.equal(dv.getUint32(29), crc32(png.subarray(12, 29)), "IHDR CRC");
    assert.deepEqual(Array.from(png.subarray(png.length - 12)), [
      0,
      0,
      0,
      0,
      73,
      69,
      78,
      68,
      0xae,
      0x42,
      0x60,
      0x82,
    ]);
    const img = await decodePng(png);
    assert.equal(img.width, w);
    assert.equal(img.height, h);
    assert.equal(img.channels, ch);
    assert.deepEqual(img.data, px);
  }
});

Deno.test("decodePng reads an independent encoder's files using all five filter types", async () => {
  const v = (x: number, y: number, c: number) => (x * 37 + y * 91 + c * 53) % 256;
  for (const [name, ch] of [["gray", 1], ["gray_alpha", 2], ["rgb", 3], ["rgba", 4]] as const) {
    const img = await decodePng(await fixture(`filters_${name}.png`));
    assert.equal(img.channels, ch);
    const want: number[] = [];
    for (let y = 0; y < 6; y++) {
      for (let x = 0; x < 7; x++) for (let c = 0; c < ch; c++) want.push(v(x, y, c));
    }
    assert.deepEqual(Array.from(img.data), want, name);
  }
  const pal = await decodePng(await fixture("palette.png"));
  assert.equal(pal.channels, 4);
  const colors = [[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255], [10, 20, 30, 128]];
  const want: number[] = [];
  for (let y = 0; y < 6; y++) for (let x = 0; x < 7; x++) want.push(...colors[(x + y) % 4]!);
  assert.deepEqual(Array.from(pal.data), want);
  assert.deepEqual(
    Array.from(toRgba({ width: 1, height: 1, channels: 2, data: new Uint8Array([5, 6]) }).rgba),
    [
      5,
      5,
      5,
      6,
    ],
  );
});

Deno.test("decodePng rejects bad signatures, bad CRCs and truncated files", async () => {
  const png = await encodePng(2, 2, new Uint8Array(16).fill(9));
  await expectFormatErrorAsync(decodePng(new Uint8Array(20), "x.png"), "x.png", "signature");
  const bad = png.slice();
  bad[20] ^= 1; // inside IHDR
  await expectFormatErrorAsync(decodePng(bad, "c.png"), "c.png", "IHDR", "CRC");
  await expectFormatErrorAsync(
    decodePng(png.subarray(0, png.length - 12), "t.png"),
    "t.png",
    "IEND",
  );
  await assert.rejects(encodePng(2, 2, new Uint8Array(15)), /2x2x4 = 16 bytes/);
});

Deno.test("imageGrid tiles NCHW images with padding and maps [-1, 1] to 0..255", () => {
  // Two 1-channel 2×2 images: values -1, 0, 1, 2 (clipped) in each.
  const imgs = new Float32Array([-1, 0, 1, 2, 1, 1, -1, -1]);
  const g = imageGrid(imgs, { n: 2, channels: 1, height: 2, width: 2, nrow: 2, padding: 1 });
  assert.equal(g.width, 2 * 2 + 3);
  assert.equal(g.height, 2 + 2);
  const px = (x: number, y: number) => g.rgba[(y * g.width + x) * 4]!;
  assert.deepEqual([px(1, 1), px(2, 1), px(1, 2), px(2, 2)], [0, 128, 255, 255]);
  assert.deepEqual([px(4, 1), px(5, 1), px(4, 2), px(5, 2)], [255, 255, 0, 0]);
  assert.equal(px(0, 0), 0); // padding is black
  // RGB, NHWC layout: channel order preserved.
  const rgb = imageGrid(new Float32Array([1, -1, 0]), {
    n: 1,
    channels: 3,
    height: 1,
    width: 1,
    padding: 0,
    layout: "nhwc",
  });
  assert.deepEqual(Array.from(rgb.rgba), [255, 0, 128, 255]);
  assert.throws(
    () => imageGrid(imgs, { n: 3, channels: 1, height: 2, width: 2 }),
    /12 values but found 8/,
  );
});

// ---------------------------------------------------------------- GIF

/** An independent GIF LZW decoder (variable code width, clear/EOI codes). */
function lzwDecode(minCode: number, data: Uint8Array, n: number): Uint8Array {
  const clear = 1 << minCode, eoi = clear + 1;
  let size = minCode + 1, pos = 0;
  const read = () => {
    let v = 0;
    for (let i = 0; i < size; i++, pos++) v |= ((data[pos >> 3]! >> (pos & 7)) & 1) << i;
    return v;
  };
  let table: number[][] = [];
  const reset = () => {
    table = Array.from({ length: clear + 2 }, (_, i) => [i]);
    size = minCode + 1;
  };
  reset();
  const out: number[] = [];
  let prev: number[] | null = null;
  while (out.length < n) {
    const code = read();
    if (code === clear) {
      reset();
      prev = null;
      continue;
    }
    if (code === eoi) break;
    let entry: number[];
    if (code < table.length) entry = table[code]!;
    else if (code === table.length && prev) entry = [...prev, prev[0]!];
    else throw new Error(`bad LZW code ${code}`);
    out.push(...entry);
    if (prev) table.push([...prev, entry[0]!]);
    prev = entry;
    if (table.length === 1 << size && size < 12) size++;
  }
  return new Uint8Array(out);
}

Deno.test("encodeGif writes GIF89a with a loop block, per-frame delays, and LZW data that decodes to the frames", () => {
  const expand = (k: number) => (k << 3) | (k >> 2); // exactly representable after 5-bit quantisation
  const w = 97, h = 61;
  const frames = [0, 1, 2].map((f) => {
    const rgba = new Uint8Array(w * h * 4);
    let s = 12345 + f;
    for (let i = 0; i < w * h; i++) {
      s = (s * 1103515245 + 12345) >>> 0;
      const c = (s >>> 16) % 200; // 200 distinct colours: forces table resets (clear codes)
      rgba.set([expand(c % 32), expand(Math.floor(c / 32)), expand(7), 255], 4 * i);
    }
    return { width: w, height: h, rgba };
  });
  const gif = encodeGif(frames, { delayMs: 250, loop: 0 });
  const dv = new DataView(gif.buffer);
  assert.equal(new TextDecoder().decode(gif.subarray(0, 6)), "GIF89a");
  assert.equal(dv.getUint16(6, true), w);
  assert.equal(dv.getUint16(8, true), h);
  assert.equal(gif[10]! & 0x80, 0x80, "global colour table flag");
  const palette = gif.subarray(13, 13 + 768);
  let p = 13 + 768;
  assert.deepEqual(Array.from(gif.subarray(p, p + 3)), [0x21, 0xff, 11]);
  assert.equal(new TextDecoder().decode(gif.subarray(p + 3, p + 14)), "NETSCAPE2.0");
  assert.equal(dv.getUint16(p + 16, true), 0, "loop forever");
  p += 19;
  let count = 0;
  while (gif[p] !== 0x3b) {
    assert.deepEqual(Array.from(gif.subarray(p, p + 3)), [0x21, 0xf9, 4]);
    assert.equal(dv.getUint16(p + 4, true), 25, "delay in 1/100 s");
    p += 8;
    assert.equal(gif[p], 0x2c);
    assert.equal(dv.getUint16(p + 5, true), w);
    assert.equal(dv.getUint16(p + 7, true), h);
    p += 10;
    const minCode = gif[p++]!;
    const blocks: number[] = [];
    while (gif[p] !== 0) {
      const len = gif[p]!;
      blocks.push(...gif.subarray(p + 1, p + 1 + len));
      p += 1 + len;
    }
    p++;
    const idx = lzwDecode(minCode, new Uint8Array(blocks), w * h);
    assert.equal(idx.length, w * h);
    const src = frames[count]!.rgba;
    for (let i = 0; i < w * h; i++) {
      const k = idx[i]!;
      const got = [palette[3 * k], palette[3 * k + 1], palette[3 * k + 2]];
      if (got[0] !== src[4 * i] || got[1] !== src[4 * i + 1] || got[2] !== src[4 * i + 2]) {
        assert.fail(
          `frame ${count} pixel ${i}: palette colour ${got} != ${src.subarray(4 * i, 4 * i + 3)}`,
        );
      }
    }
    count++;
  }
  assert.equal(count, 3);
  assert.equal(p, gif.length - 1);
  assert.throws(
    () => encodeGif([frames[0]!, { width: 2, height: 2, rgba: new Uint8Array(16) }]),
    /frame 1/,
  );
  assert.throws(() => encodeGif([]), /non-empty/);
});

// ---------------------------------------------------------------- run directories

Deno.test("createRun makes runs/<task>-<timestamp>/ with config.json, samples/ and plots/", async () => {
  const tmp = await Deno.makeTempDir();
  try {
    const run = await createRun("train:stablevm", {
      outputDir: tmp,
      config: { seed: 3, lr: 1e-4, maxTrainSteps: 7 },
    });
    assert.match(run.dir, new RegExp(`^${tmp}/train-stablevm-\\d{8}-\\d{6}$`));
    // On disk in the seeds' snake_case spelling; in memory (and after openRun) camelCase.
    assert.deepEqual(JSON.parse(await Deno.readTextFile(`${run.dir}/config.json`)), {
      seed: 3,
      lr: 1e-4,
      max_train_steps: 7,
    });
    assert.deepEqual((await openRun(run.dir)).config, { seed: 3, lr: 1e-4, maxTrainSteps: 7 });
    assert.ok(Deno.statSync(run.samplesDir).isDirectory);
    assert.ok(Deno.statSync(run.plotsDir).isDirectory);
    assert.equal(run.checkpoints.dir, `${run.dir}/checkpoints`);
    // Same second, same task: a distinct directory.
    const run2 = await createRun("train:stablevm", { outputDir: tmp, config: {} });
    assert.notEqual(run2.dir, run.dir);
    const named = await createRun("x", { outputDir: tmp, expName: "my-exp", config: { a: 1 } });
    assert.equal(named.dir, `${tmp}/my-exp`);
    await assert.rejects(
      createRun("x", { outputDir: tmp, expName: "my-exp" }),
      /already holds a run.*--resume/,
    );
    await assert.rejects(
      createRun("x", { outputDir: tmp, expName: "../up" }),
      /plain directory name/,
    );
    assert.equal(await run.writeFile("plots/a.txt", "A"), `${run.dir}/plots/a.txt`);
    await assert.rejects(run.writeFile("../escape.txt", "x"), /relative path inside/);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("logMetrics appends one JSON line per call; openRun resumes appending; torn lines are skipped", async () => {
  const tmp = await Deno.makeTempDir();
  try {
    const run = await createRun("toy", { outputDir: tmp, expName: "r", config: { steps: 3 } });
    await run.logMetrics(1, { "training/loss_flow": 0.5 });
    await run.logMetrics(2, { "training/loss_flow": 0.25, lr: 1e-3 });
    const lines = (await Deno.readTextFile(run.metricsPath)).split("\n");
    assert.deepEqual(lines, [
      '{"step":1,"training/loss_flow":0.5}',
      '{"step":2,"training/loss_flow":0.25,"lr":0.001}',
      "",
    ]);
    const again = await openRun(run.dir);
    assert.deepEqual(again.config, { steps: 3 });
    await again.logMetrics(3, { loss: NaN });
    await Deno.writeTextFile(run.metricsPath, '{"step":4,"lo', { append: true });
    const recs = await readMetrics(run.metricsPath);
    assert.deepEqual(recs.map((r) => r.step), [1, 2, 3]);
    assert.equal(recs[2]!.loss, null);
    await Deno.writeTextFile(
      run.metricsPath,
      "garbage\n" + (await Deno.readTextFile(run.metricsPath)),
    );
    await assert.rejects(readMetrics(run.metricsPath), /line 1 is not valid JSON/);
    await assert.rejects(openRun(`${tmp}/nope`), /config\.json/);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

// ---------------------------------------------------------------- progress

Deno.test("Progress prints plain lines every 10% with rate and ETA when not a TTY", () => {
  let t = 0;
  const out: string[] = [];
  const p = new Progress(1000, {
    label: "train",
    tty: false,
    write: (s) => out.push(s),
    now: () => t,
  });
  for (let step = 0; step <= 1000; step++) {
    t = step * 10; // 100 it/s
    p.update(step, { loss: 1 / (step + 1) });
  }
  p.done({ final: 0.5 });
  assert.equal(out.length, 11);
  assert.equal(out[0], "train step 100/1000 loss 0.0099 100.0 it/s eta 9s\n");
  assert.equal(out[9], "train step 1000/1000 loss 9.990e-4 100.0 it/s eta 0s\n");
  assert.equal(out[10], "train done 1000/1000 steps in 10.0s (100.0 it/s) final 0.5000\n");
});

Deno.test("Progress draws one updating bar on a TTY, throttled, with ETA mm:ss", () => {
  let t = 0;
  const out: string[] = [];
  const p = new Progress(200, { label: "fit", tty: true, write: (s) => out.push(s), now: () => t });
  for (let step = 0; step <= 200; step++) {
    t = step * 20; // 50 it/s; redraws at most every 100 ms
    p.update(step, { loss: 0.1234 });
  }
  p.done();
  assert.ok(out.length >= 35 && out.length <= 45, `redraws: ${out.length}`);
  assert.ok(out.every((s) => s.startsWith("\r\x1b[2K")));
  const mid = out.find((s) => s.includes(" 100/200 "))!;
  assert.equal(
    mid,
    "\r\x1b[2Kfit 100/200 [============>           ] loss 0.1234  50.0 it/s  ETA 00:02",
  );
  assert.ok(out[out.length - 1]!.endsWith("\n"));
  assert.ok(out[out.length - 2]!.includes("200/200 [========================]"));
});

Deno.test("toUint8Nhwc converts NCHW floats in [-1, 1] to the ADM uint8 NHWC layout", async () => {
  // Two RGB 1×2 images, NCHW.
  const imgs = new Float32Array([
    ...[-1, 1], // image 0, R
    ...[0, 0.5], // image 0, G
    ...[2, -2], // image 0, B (clipped)
    ...[1, 1],
    ...[1, 1],
    ...[-1, -1],
  ]);
  const u8 = toUint8Nhwc(imgs, { n: 2, channels: 3, height: 1, width: 2 });
  assert.deepEqual(Array.from(u8), [0, 128, 255, 255, 191, 0, 255, 255, 0, 255, 255, 0]);
  const z = await decodeNpz(encodeNpz({ arr_0: { shape: [2, 1, 2, 3], data: u8 } }));
  assert.equal(z.arr_0!.dtype, "|u1");
  assert.deepEqual(Array.from(z.arr_0!.data), Array.from(u8));
  const gray = toUint8Nhwc([0, 1], {
    n: 1,
    channels: 1,
    height: 1,
    width: 2,
    range: [0, 1],
    rgb: true,
  });
  assert.deepEqual(Array.from(gray), [0, 0, 0, 255, 255, 255]);
});
