/**
 * @file Fuzz targets: each parser with valid seed files, structure-aware mutations (header
 * field edits with lengths and checksums fixed up, so the mutation reaches the parser's
 * deeper checks) and the invariants an accepted file must satisfy.
 * @module
 */
import {
  decodeCheckpoint,
  decodeIdx,
  decodeNpy,
  decodeNpz,
  decodePng,
  decodeSafetensorsWithMetadata,
  encodeCheckpoint,
  encodeNpy,
  encodeNpz,
  encodePng,
  encodeSafetensors,
  tensor,
} from "../../mod.ts";
import { parseFlags } from "../../cli/mod.ts";
import { compress, concatBytes, crc32 } from "../../lib/formats/_bytes.ts";
import {
  editNumber,
  editString,
  EXTREMES,
  type FuzzCase,
  type FuzzTarget,
  mutate,
  type Mutator,
  OracleFailure,
  type Rng,
  TEXT_EXTREMES,
  writeInt,
} from "./lib.ts";

/** What a decoder may allocate per case while fuzzing. */
export const FUZZ_MAX_BYTES = 16 * 2 ** 20;

const FIX = new URL("../testdata/", import.meta.url);
const enc = new TextEncoder(), dec = new TextDecoder();
const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** Zeros a bomb inflates to: far past any declared size and past the RSS cap when inflated. */
export const BOMB_MIB = 256;

const bombs = new Map<string, Promise<Uint8Array>>();
/**
 * `prefix` followed by `mib` MiB of zeros, compressed, built once per key by streaming 1 MiB
 * writes (the inflated form never exists in the fuzzer's memory).
 */
export function bomb(
  key: string,
  prefix: Uint8Array,
  mib: number,
  format: "deflate" | "deflate-raw" | "gzip",
): Promise<Uint8Array> {
  if (!bombs.has(key)) {
    bombs.set(
      key,
      (async () => {
        const cs = new CompressionStream(format);
        const w = cs.writable.getWriter();
        const out = new Response(cs.readable).arrayBuffer();
        await w.write(prefix as Uint8Array<ArrayBuffer>);
        const zeros = new Uint8Array(1 << 20);
        for (let k = 0; k < mib; k++) await w.write(zeros);
        await w.close();
        return new Uint8Array(await out);
      })(),
    );
  }
  return bombs.get(key)!;
}

function fail(cond: boolean, msg: string): void {
  if (cond) throw new OracleFailure(msg);
}

/** Check a decoded array: safe-integer extents whose product is the value count. */
function checkArray(where: string, shape: readonly number[], n: number): void {
  fail(
    !shape.every((d) => Number.isSafeInteger(d) && d >= 0),
    `${where}: accepted shape [${shape}]`,
  );
  fail(prod(shape) !== n, `${where}: shape [${shape}] but ${n} values`);
}

// ---------------------------------------------------------------- safetensors

const DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL", "U64", "X"];

function le64(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
  return b;
}

function rawSafetensors(header: string, data: Uint8Array): Uint8Array {
  const h = enc.encode(header);
  return concatBytes([le64(h.length), h, data]);
}

/** Split a safetensors-like file into header text and data (tolerating damage). */
function splitSafetensors(b: Uint8Array): { header: string; data: Uint8Array } {
  const n = b.length >= 8
    ? Number(new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true))
    : 0;
  const end = Math.min(b.length, 8 + n);
  return { header: dec.decode(b.subarray(8, end)), data: b.subarray(end) };
}

/** Edit the JSON header as text, then (usually) fix the length field. */
const headerEdit: Mutator = (b, r) => {
  const { header, data } = splitSafetensors(b);
  let h = header;
  const k = r.int(5);
  if (k === 0) h = editNumber(h, r);
  else if (k === 1) h = editString(h, r, [...DTYPES, "__metadata__", "__proto__", "", "model.w"]);
  else if (k === 2) h = editString(h, r, TEXT_EXTREMES);
  else if (k === 3) {
    const i = r.int(h.length + 1);
    h = h.slice(0, i) + r.pick([",", "{", "}", "[", "]", '"', ":", " ", "\\"]) + h.slice(i);
  } else h = h.replace(/"data_offsets":\[(\d+),(\d+)\]/, (_, a, c) => `"data_offsets":[${c},${a}]`);
  const out = rawSafetensors(h, data);
  if (r.chance(0.2)) writeInt(out, 0, 8, enc.encode(header).length, true);
  return out;
};

function checkSafetensors(
  name: string,
  res: ReturnType<typeof decodeSafetensorsWithMetadata>,
): void {
  for (const [k, t] of Object.entries(res.tensors)) {
    checkArray(`${name}[${k}]`, t.shape, t.data.length);
  }
  for (const [k, v] of Object.entries(res.metadata)) {
    fail(typeof v !== "string", `${name}: metadata ${k} is not a string`);
  }
}

function safetensorsTarget(): FuzzTarget {
  const seeds: Uint8Array[] = [];
  return {
    name: "safetensors",
    errorNames: ["FileFormatError"],
    needsFile: true,
    async setup() {
      if (seeds.length) return;
      seeds.push(
        encodeSafetensors(
          {
            w: { shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) },
            b: { shape: [3], data: new Float32Array([0.5, -1, 2]) },
            s: { shape: [], data: new Float32Array([7]) },
            e: { shape: [0, 4], data: new Float32Array(0) },
          },
          { note: "seed", step: "12" },
        ),
      );
      const mixed = {
        h: { dtype: "F16", shape: [2], data_offsets: [0, 4] },
        bf: { dtype: "BF16", shape: [1, 2], data_offsets: [4, 8] },
        d: { dtype: "F64", shape: [1], data_offsets: [8, 16] },
        i: { dtype: "I64", shape: [1], data_offsets: [16, 24] },
        u: { dtype: "U8", shape: [2, 2], data_offsets: [24, 28] },
        t: { dtype: "BOOL", shape: [2], data_offsets: [28, 30] },
      };
      seeds.push(
        rawSafetensors(JSON.stringify(mixed), Uint8Array.from({ length: 30 }, (_, i) => i * 7)),
      );
      seeds.push(await Deno.readFile(new URL("torch_mlp.safetensors", FIX)));
    },
    make(r, name): Promise<FuzzCase> {
      const bytes = mutate(r.pick(seeds), r, [headerEdit]);
      return Promise.resolve({
        name,
        run() {
          checkSafetensors(
            name,
            decodeSafetensorsWithMetadata(bytes, name, { maxBytes: FUZZ_MAX_BYTES }),
          );
          return Promise.resolve();
        },
      });
    },
  };
}

// ---------------------------------------------------------------- npy / npz

const NPY_WORDS = [
  "<f4",
  "<f8",
  "<f2",
  ">f4",
  "|u1",
  "<i8",
  "<u8",
  "|b1",
  "<c8",
  "O",
  "True",
  "False",
  "",
];

/** Edit the `.npy` header dict as text and fix the header length field. */
const npyHeaderEdit: Mutator = (b, r) => {
  if (b.length < 10) return b.slice();
  const v2 = b[6] !== 1;
  const pre = v2 ? 12 : 10;
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  const hlen = v2 ? (b.length >= 12 ? dv.getUint32(8, true) : 0) : dv.getUint16(8, true);
  const end = Math.min(b.length, pre + hlen);
  let h = dec.decode(b.subarray(pre, end));
  const k = r.int(4);
  if (k === 0) h = editNumber(h, r);
  else if (k === 1) h = editString(h, r, NPY_WORDS);
  else if (k === 2) {
    h = h.replace(/\(([^)]*)\)/, () => `(${r.pick(["", "0,", "1,1,1,1,1,1,1,1", "-1,", "3,,4"])})`);
  } else h = h.replace("False", r.pick(["True", "false", "0"]));
  const hb = enc.encode(h);
  const out = concatBytes([b.subarray(0, pre), hb, b.subarray(end)]);
  const odv = new DataView(out.buffer);
  if (!r.chance(0.1)) {
    if (v2 && out.length >= 12) odv.setUint32(8, hb.length, true);
    else if (!v2) odv.setUint16(8, Math.min(0xffff, hb.length), true);
  }
  return out;
};

function npySeeds(): Promise<Uint8Array[]> {
  const names = [
    "f4_2x3.npy",
    "f4_scalar.npy",
    "f8_4.npy",
    "i4_2x2.npy",
    "i8_3.npy",
    "u1_2x2x2x3.npy",
    "u4_3.npy",
  ];
  return Promise.all(names.map((n) => Deno.readFile(new URL(`io/${n}`, FIX)))).then((xs) => [
    ...xs,
    encodeNpy({ shape: [2, 2], data: new Float32Array([1, 2, 3, 4]), dtype: "<f8" }),
    encodeNpy({ shape: [0, 3], data: new Float32Array(0) }),
  ]);
}

function npyTarget(): FuzzTarget {
  let seeds: Uint8Array[] = [];
  return {
    name: "npy",
    errorNames: ["FileFormatError"],
    needsFile: true,
    async setup() {
      if (!seeds.length) seeds = await npySeeds();
    },
    make(r, name) {
      const bytes = mutate(r.pick(seeds), r, [npyHeaderEdit]);
      return Promise.resolve({
        name,
        run() {
          const a = decodeNpy(bytes, name, { maxBytes: FUZZ_MAX_BYTES });
          checkArray(name, a.shape, a.data.length);
          return Promise.resolve();
        },
      });
    },
  };
}

/** A ZIP member: data to store or deflate, or an already deflated body with its sizes. */
export type ZipMember =
  | { name: string; data: Uint8Array; deflate: boolean }
  | { name: string; deflated: Uint8Array; size: number; crc: number };

/** A ZIP of the given members (stored or deflated), with correct CRCs. */
export async function zip(members: ZipMember[]): Promise<Uint8Array> {
  const parts: Uint8Array[] = [], central: Uint8Array[] = [];
  let off = 0;
  for (const m of members) {
    const fname = enc.encode(m.name);
    const deflate = "deflated" in m || m.deflate;
    const body = "deflated" in m
      ? m.deflated
      : m.deflate
      ? await compress(m.data, "deflate-raw")
      : m.data;
    const size = "deflated" in m ? m.size : m.data.length;
    const crc = "deflated" in m ? m.crc : crc32(m.data);
    const lh = new Uint8Array(30 + fname.length), l = new DataView(lh.buffer);
    l.setUint32(0, 0x04034b50, true);
    l.setUint16(8, deflate ? 8 : 0, true);
    l.setUint32(14, crc, true);
    l.setUint32(18, body.length, true);
    l.setUint32(22, size, true);
    l.setUint16(26, fname.length, true);
    lh.set(fname, 30);
    const ch = new Uint8Array(46 + fname.length), c = new DataView(ch.buffer);
    c.setUint32(0, 0x02014b50, true);
    c.setUint16(10, deflate ? 8 : 0, true);
    c.setUint32(16, crc, true);
    c.setUint32(20, body.length, true);
    c.setUint32(24, size, true);
    c.setUint16(28, fname.length, true);
    c.setUint32(42, off, true);
    ch.set(fname, 46);
    parts.push(lh, body);
    central.push(ch);
    off += lh.length + body.length;
  }
  const cd = concatBytes(central);
  const eocd = new Uint8Array(22), e = new DataView(eocd.buffer);
  e.setUint32(0, 0x06054b50, true);
  e.setUint16(8, members.length, true);
  e.setUint16(10, members.length, true);
  e.setUint32(12, cd.length, true);
  e.setUint32(16, off, true);
  return concatBytes([...parts, cd, eocd]);
}

/** Overwrite a ZIP field (at a signature-relative offset) with an extreme value. */
const zipFieldEdit: Mutator = (b, r) => {
  const out = b.slice();
  const sigs: number[] = [];
  const dv = new DataView(out.buffer);
  for (let i = 0; i + 4 <= out.length; i++) {
    const s = dv.getUint32(i, true);
    if (
      s === 0x04034b50 || s === 0x02014b50 || s === 0x06054b50 || s === 0x06064b50 ||
      s === 0x07064b50
    ) sigs.push(i);
  }
  if (!sigs.length) return out;
  const at = r.pick(sigs) + r.pick([4, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 42, 48]);
  const w = r.pick([2, 4, 8]);
  writeInt(out, at, w, r.pick(EXTREMES), true);
  return out;
};

function npzTarget(): FuzzTarget {
  let seeds: Uint8Array[] = [], members: Uint8Array[] = [];
  let npzBomb: Promise<Uint8Array>;
  return {
    name: "npz",
    errorNames: ["FileFormatError"],
    needsFile: true,
    async setup() {
      if (seeds.length) return;
      members = await npySeeds();
      npzBomb = bomb("npz", members[0]!, BOMB_MIB, "deflate-raw");
      await npzBomb;
      seeds = [
        await Deno.readFile(new URL("io/savez.npz", FIX)),
        await Deno.readFile(new URL("io/savez_compressed.npz", FIX)),
        encodeNpz({
          x: { shape: [3, 2], data: new Float32Array([1, 2, 3, 4, 5, 6]) },
          labels: { shape: [3], data: new Float32Array([0, 1, 2]), dtype: "<i8" },
        }),
      ];
    },
    async make(r, name) {
      let bytes: Uint8Array;
      if (r.chance(0.4)) {
        // Valid ZIP structure around mutated members (CRCs fixed), some deflated, and
        // sometimes a deflate bomb: a .npy followed by 256 MiB of zeros, declared with its
        // true size (above the cap) or a small one (inflation must stop there).
        const n = 1 + r.int(3);
        const ms: ZipMember[] = [];
        for (let k = 0; k < n; k++) {
          const mname = r.pick(["a.npy", "x.npy", "labels.npy", "__proto__.npy", "b"]);
          const data = r.chance(0.7)
            ? mutate(r.pick(members), r, [npyHeaderEdit])
            : r.pick(members);
          if (r.chance(0.05)) {
            const size = r.pick([BOMB_MIB * 2 ** 20 + members[0]!.length, members[0]!.length]);
            ms.push({ name: mname, deflated: await npzBomb, size, crc: crc32(members[0]!) });
          } else ms.push({ name: mname, data, deflate: r.chance(0.5) });
        }
        bytes = await zip(ms);
        if (r.chance(0.3)) bytes = mutate(bytes, r, [zipFieldEdit]);
      } else bytes = mutate(r.pick(seeds), r, [zipFieldEdit]);
      return {
        name,
        async run() {
          const z = await decodeNpz(bytes, name, { maxBytes: FUZZ_MAX_BYTES });
          for (const [k, a] of Object.entries(z)) {
            checkArray(`${name}[${k}]`, a.shape, a.data.length);
          }
        },
      };
    },
  };
}

// ---------------------------------------------------------------- png

/** A PNG chunk. */
export interface Chunk {
  type: string;
  data: Uint8Array;
}

function chunks(b: Uint8Array): Chunk[] {
  const out: Chunk[] = [];
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  for (let p = 8; p + 12 <= b.length;) {
    const len = dv.getUint32(p);
    if (p + 12 + len > b.length) break;
    out.push({ type: dec.decode(b.subarray(p + 4, p + 8)), data: b.slice(p + 8, p + 8 + len) });
    p += 12 + len;
  }
  return out;
}

/** A PNG file of the given chunks, each with a correct CRC. */
export function png(cs: Chunk[]): Uint8Array {
  const parts: Uint8Array[] = [new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10])];
  for (const c of cs) {
    const out = new Uint8Array(12 + c.data.length), dv = new DataView(out.buffer);
    dv.setUint32(0, c.data.length);
    out.set(enc.encode(c.type.padEnd(4).slice(0, 4)), 4);
    out.set(c.data, 8);
    dv.setUint32(8 + c.data.length, crc32(out.subarray(4, 8 + c.data.length)));
    parts.push(out);
  }
  return concatBytes(parts);
}

const IHDR_FIELDS: [number, number][] = [[0, 4], [4, 4], [8, 1], [9, 1], [10, 1], [11, 1], [12, 1]];

const pngBomb = () => bomb("png", new Uint8Array(0), BOMB_MIB, "deflate");

async function pngStructural(b: Uint8Array, r: Rng): Promise<Uint8Array> {
  const cs = chunks(b);
  const ihdr = cs.find((c) => c.type === "IHDR");
  const k = r.int(6);
  if (k <= 1 && ihdr) {
    // A header field at an extreme (width/height 0, 2^31, 2^32-1; depth, color type …).
    const [off, w] = r.pick(IHDR_FIELDS);
    const d = ihdr.data.slice();
    writeInt(d, off, w, w === 4 ? r.pick(EXTREMES) : r.pick([0, 1, 2, 3, 4, 6, 8, 16, 255]), false);
    ihdr.data = d;
  } else if (k === 2 && ihdr) {
    ihdr.data = ihdr.data.slice(0, r.int(13)); // a short IHDR
  } else if (k === 3) {
    // Replace the image data: a deflate bomb, garbage, or a stream cut short.
    const zeros = await r.pick([bomb("png1", new Uint8Array(0), 1, "deflate"), pngBomb()]);
    const data = r.pick([zeros, r.bytes(r.int(64)), zeros.slice(0, r.int(zeros.length))]);
    const rest = cs.filter((c) => c.type !== "IDAT");
    rest.splice(Math.max(1, rest.length - 1), 0, { type: "IDAT", data });
    return png(rest);
  } else if (k === 4 && cs.length > 1) {
    const i = r.int(cs.length), j = r.int(cs.length);
    [cs[i], cs[j]] = [cs[j]!, cs[i]!]; // chunk order
  } else {
    const c = r.pick(cs.length ? cs : [{ type: "IHDR", data: new Uint8Array(13) }]);
    c.data = mutate(c.data, r); // a chunk body mutated, CRC fixed
  }
  return png(cs);
}

function pngTarget(): FuzzTarget {
  const seeds: Uint8Array[] = [];
  return {
    name: "png",
    errorNames: ["FileFormatError"],
    needsFile: true,
    async setup() {
      if (seeds.length) return;
      for (
        const n of [
          "filters_gray.png",
          "filters_gray_alpha.png",
          "filters_rgb.png",
          "filters_rgba.png",
          "palette.png",
        ]
      ) {
        seeds.push(await Deno.readFile(new URL(`io/${n}`, FIX)));
      }
      seeds.push(await encodePng(3, 2, Uint8Array.from({ length: 24 }, (_, i) => i * 10)));
      seeds.push(await encodePng(1, 1, new Uint8Array([5]), { channels: 1 }));
      await pngBomb();
    },
    async make(r, name) {
      const seed = r.pick(seeds);
      let bytes = r.chance(0.5) ? await pngStructural(seed, r) : mutate(seed, r);
      if (r.chance(0.2)) bytes = mutate(bytes, r);
      else if (r.chance(0.3)) bytes = png(chunks(bytes)); // fix every CRC after a byte mutation
      return {
        name,
        async run() {
          const img = await decodePng(bytes, name, { maxBytes: FUZZ_MAX_BYTES });
          fail(img.width < 1 || img.height < 1, `${name}: accepted ${img.width}×${img.height}`);
          fail(
            img.data.length !== img.width * img.height * img.channels,
            `${name}: ${img.data.length} bytes for ${img.width}×${img.height}×${img.channels}`,
          );
        },
      };
    },
  };
}

// ---------------------------------------------------------------- idx

/** An uncompressed IDX file of unsigned bytes. */
export function idxRaw(extents: number[], fill: (i: number) => number): Uint8Array {
  const n = prod(extents);
  const out = new Uint8Array(4 + 4 * extents.length + n);
  const dv = new DataView(out.buffer);
  out[2] = 8;
  out[3] = extents.length;
  extents.forEach((e, i) => dv.setUint32(4 + 4 * i, e));
  for (let i = 0; i < n; i++) out[4 + 4 * extents.length + i] = fill(i);
  return out;
}

const idxHeaderEdit: Mutator = (b, r) => {
  const out = b.slice();
  const dims = out[3] ?? 1;
  if (r.chance(0.2)) out[r.int(4)] = r.pick([0, 1, 3, 8, 9, 0x0d, 255]);
  else writeInt(out, 4 + 4 * r.int(Math.max(1, dims)), 4, r.pick(EXTREMES), false);
  return out;
};

function idxTarget(): FuzzTarget {
  let raws: { bytes: Uint8Array; dims: number }[] = [];
  return {
    name: "idx",
    errorNames: ["FileFormatError", "FileTypeError"],
    needsFile: true,
    async setup() {
      if (raws.length) return;
      raws = [
        { bytes: idxRaw([5, 4, 4], (i) => (i * 37) & 0xff), dims: 3 },
        { bytes: idxRaw([7], (i) => i % 10), dims: 1 },
        { bytes: idxRaw([3, 28, 28], (i) => (i * 13) & 0xff), dims: 3 },
      ];
      await bomb(`idx0-${BOMB_MIB}`, raws[0]!.bytes, BOMB_MIB, "gzip");
    },
    async make(r, name) {
      const seed = r.pick(raws);
      const k = r.int(4);
      let bytes: Uint8Array;
      if (k === 0) bytes = await compress(mutate(seed.bytes, r, [idxHeaderEdit]), "gzip");
      else if (k === 1) bytes = mutate(await compress(seed.bytes, "gzip"), r);
      else if (k === 2) {
        // More data than declared: one byte, or a 256 MiB gzip bomb.
        const mib = seed === raws[0] ? r.pick([0, BOMB_MIB]) : 0; // one bomb is enough
        const extra = mib ? new Uint8Array(0) : new Uint8Array(1);
        bytes = await bomb(
          `idx${raws.indexOf(seed)}-${mib}`,
          concatBytes([seed.bytes, extra]),
          mib,
          "gzip",
        );
      } else bytes = mutate(seed.bytes, r, [idxHeaderEdit]);
      const dims = r.chance(0.8) ? seed.dims : undefined;
      const limit = r.chance(0.2) ? 1 + r.int(6) : undefined;
      return {
        name,
        async run() {
          const a = await decodeIdx(bytes, name, { dims, limit, maxBytes: FUZZ_MAX_BYTES });
          checkArray(name, a.shape, a.data.length);
          fail(a.total < 1 || a.shape.includes(0), `${name}: accepted empty extents [${a.shape}]`);
        },
      };
    },
  };
}

// ---------------------------------------------------------------- checkpoint

function checkpointTarget(): FuzzTarget {
  let v2: Uint8Array, v1: Uint8Array, want = "";
  const summary = async (ck: Awaited<ReturnType<typeof decodeCheckpoint>>) => {
    const t: Record<string, unknown> = {};
    for (const sec of ["model", "ema", "optimizer"] as const) {
      for (const [k, x] of Object.entries(ck[sec] ?? {})) {
        t[`${sec}.${k}`] = [x.shape, Array.from(await x.data())];
      }
    }
    return JSON.stringify({ step: ck.step, rng: ck.rng, config: ck.config, extra: ck.extra, t });
  };
  return {
    name: "checkpoint",
    errorNames: ["CheckpointError"],
    needsFile: true,
    async setup() {
      if (v2) return;
      const ckpt = {
        model: { "fc.weight": tensor([[1, 2], [3, 4]]), "fc.bias": tensor([0.5, -0.5]) },
        ema: { "fc.bias": tensor([0.25, 0]) },
        optimizer: { "m.fc.bias": tensor([0.1, 0.2]) },
        step: 1500,
        rng: { seed: 7, counter: 123456 },
        config: { lr: 1e-4, name: "fuzz" },
        extra: { bank: 3 },
      };
      v2 = await encodeCheckpoint(ckpt);
      want = await summary(decodeCheckpoint(v2));
      // A version-1 file (checksum of the data only), as older releases wrote.
      const text = dec.decode(
        v2.subarray(8, 8 + Number(new DataView(v2.buffer).getBigUint64(0, true))),
      );
      const meta = JSON.parse(text).__metadata__;
      delete meta.file_crc32;
      meta.format_version = "1";
      const head = JSON.parse(text);
      head.__metadata__ = meta;
      v1 = rawSafetensors(JSON.stringify(head), v2.subarray(8 + text.length));
    },
    make(r, name) {
      const legacy = r.chance(0.2);
      const bytes = mutate(legacy ? v1 : v2, r, [headerEdit]);
      return Promise.resolve({
        name,
        async run() {
          const ck = decodeCheckpoint(bytes, name, { maxBytes: FUZZ_MAX_BYTES });
          // The header of a version-2 file is checksummed: whatever loads is the original.
          if (!legacy) fail((await summary(ck)) !== want, `${name}: accepted with changed content`);
          fail(!Number.isSafeInteger(ck.step) || ck.step < 0, `${name}: step ${ck.step}`);
          if (ck.rng) {
            fail(
              !Number.isSafeInteger(ck.rng.counter) || ck.rng.counter < 0,
              `${name}: rng counter ${ck.rng.counter}`,
            );
          }
        },
      });
    },
  };
}

// ---------------------------------------------------------------- flags

const SPEC = [
  { name: "seed", type: "int", default: 0, min: 0 },
  { name: "num-steps", type: "int", default: 50, min: 1, max: 10000, aliases: ["steps"] },
  { name: "lr", type: "number", default: 1e-3, min: 0 },
  { name: "loss-type", type: "choice", choices: ["si", "stablevm"], default: "si" },
  { name: "ema", type: "bool", default: true },
  { name: "output-dir", type: "string" },
] as const;

const TOKENS = [
  "--seed",
  "3",
  "--num_steps",
  "--num-steps=20",
  "--model.num_steps",
  "--steps",
  "--lr",
  "1e-4",
  "--lr=1e400",
  "--loss-type",
  "stablevm",
  "--loss_type=si",
  "--no-ema",
  "--ema=False",
  "--ema",
  "true",
  "--output-dir",
  "runs/x",
  "--",
  "-",
  "-x",
  "--=",
  "--no-seed",
  "--seed=-1",
  "--seed=1.5",
  "--seed=",
  "--help",
  "-h",
  "NaN",
  "0x10",
  "",
  "=",
  "--ema=maybe",
  "--Num-Steps",
  "--über",
  "--__proto__",
  "--constructor",
  "--to-string",
  "--seed=9007199254740993",
  "--lr= ",
  "--output_dir=",
];

function flagsTarget(): FuzzTarget {
  return {
    name: "flags",
    errorNames: ["RangeError"],
    needsFile: false,
    // A flag error names the flag or argument (not, say, "Maximum call stack size exceeded").
    accepts: (e) => /--|flag|argument/i.test(e.message),
    setup: () => Promise.resolve(),
    make(r, name) {
      const argv: string[] = [];
      const n = r.int(8);
      for (let k = 0; k < n; k++) {
        let t = r.pick(TOKENS);
        if (r.chance(0.2) && t.length) {
          const i = r.int(t.length);
          t = t.slice(0, i) +
            String.fromCharCode(r.pick([0, 45, 46, 61, 95, 0x2028, 0xd800, r.int(128)])) +
            t.slice(i + 1);
        }
        argv.push(t);
      }
      return Promise.resolve({
        name,
        run() {
          const f = parseFlags(argv, SPEC, { task: "fuzz", onHelp: () => {} });
          fail(
            !Number.isInteger(f.seed) || f.seed < 0,
            `seed ${f.seed} from ${JSON.stringify(argv)}`,
          );
          fail(
            !Number.isInteger(f.numSteps) || f.numSteps < 1 || f.numSteps > 10000,
            `numSteps ${f.numSteps} from ${JSON.stringify(argv)}`,
          );
          fail(!(f.lr >= 0 && Number.isFinite(f.lr)), `lr ${f.lr} from ${JSON.stringify(argv)}`);
          fail(!["si", "stablevm"].includes(f.lossType), `loss-type ${f.lossType}`);
          fail(typeof f.ema !== "boolean", `ema ${f.ema}`);
          return Promise.resolve();
        },
      });
    },
  };
}

/** Every target, by name. */
export const TARGETS: Record<string, () => FuzzTarget> = {
  safetensors: safetensorsTarget,
  npy: npyTarget,
  npz: npzTarget,
  png: pngTarget,
  idx: idxTarget,
  checkpoint: checkpointTarget,
  flags: flagsTarget,
};
