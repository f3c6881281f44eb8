/**
 * @file Robustness of the file readers (issue 15): each test reproduces one finding of the
 * fuzzing session — a header change accepted by the checkpoint checksum, an unvalidated RNG
 * state, generic DataView errors without a file name, unbounded inflation, unbounded URL
 * fetches, overflowing shapes, empty images and IDX files, truncated fractional labels,
 * NaN data — and checks that it is now refused with a typed error naming the file.
 * @module
 */
import { strict as assert } from "node:assert";
import {
  CheckpointError,
  decodeCheckpoint,
  decodeIdx,
  decodeNpy,
  decodeNpz,
  decodePng,
  decodeSafetensors,
  encodeCheckpoint,
  encodeNpz,
  encodeSafetensors,
  FetchError,
  FileFormatError,
  FileTypeError,
  loadArrayDataset,
  loadCheckpoint,
  loadFashionMnist,
  loadNpz,
  loadSafetensors,
  saveNpz,
  tensor,
} from "../../mod.ts";
import { compress, concatBytes, crc32 } from "../../lib/formats/_bytes.ts";
import { idxRaw, png, zip } from "../fuzz/targets.ts";

const enc = new TextEncoder(), dec = new TextDecoder();

/** Assert that `p` rejects with an error of class `cls` whose `file` and message name `file`. */
async function rejectsNaming(
  p: Promise<unknown> | (() => unknown),
  cls: abstract new (...a: never[]) => Error,
  file: string,
  re?: RegExp,
): Promise<Error> {
  let err: unknown;
  try {
    await (typeof p === "function" ? p() : p);
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof cls, `expected ${cls.name}, got ${err}`);
  const e = err as Error & { file?: string };
  assert.equal(e.name, cls.name);
  assert.ok(e.file?.startsWith(file), `error.file ${e.file} is not ${file}`);
  assert.ok(e.message.includes(file), `"${e.message}" does not name ${file}`);
  if (re) assert.match(e.message, re);
  return e;
}

// ---------------------------------------------------------------- checkpoints

const CKPT = {
  model: { "fc.weight": tensor([[1, 2], [3, 4]]), "fc.bias": tensor([0.5, -0.5]) },
  step: 1500,
  rng: { seed: 7, counter: 123456 },
  config: { lr: 1e-4 },
};

function headerOf(b: Uint8Array): { text: string; data: Uint8Array } {
  const n = Number(new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true));
  return { text: dec.decode(b.subarray(8, 8 + n)), data: b.subarray(8 + n) };
}

/** A safetensors file from header text and data (the length field matches the text). */
function withHeader(text: string, data: Uint8Array): Uint8Array {
  const h = enc.encode(text);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

/** Recompute a version-2 checkpoint's whole-file CRC (as a deliberate writer would). */
function reChecksum(b: Uint8Array): Uint8Array {
  const at = 8 + '{"__metadata__":{"file_crc32":"'.length;
  const out = b.slice();
  out.set(enc.encode("00000000"), at);
  out.set(enc.encode(crc32(out).toString(16).padStart(8, "0")), at);
  return out;
}

Deno.test("checkpoint: every single-bit change in the header is refused (the checksum covers it)", async () => {
  const bytes = await encodeCheckpoint(CKPT);
  const hlen = 8 + enc.encode(headerOf(bytes).text).length;
  let refused = 0;
  for (let i = 0; i < hlen; i++) {
    for (let bit = 0; bit < 8; bit++) {
      const b = bytes.slice();
      b[i]! ^= 1 << bit;
      assert.throws(() => decodeCheckpoint(b, "h.safetensors"), CheckpointError, `byte ${i}`);
      refused++;
    }
  }
  assert.equal(refused, hlen * 8);
  // The findings, as edits that keep the header well-formed: step 1500 → 500, a counter
  // changed, a tensor renamed. Version 1 accepted all three.
  const { text, data } = headerOf(bytes);
  for (
    const [from, to] of [
      ['"step":"1500"', '"step":"500"'],
      ['\\"counter\\":123456', '\\"counter\\":123457'],
      ['"model.fc.bias"', '"model.fc.bia5"'],
    ]
  ) {
    assert.ok(text.includes(from), from);
    await rejectsNaming(
      () => decodeCheckpoint(withHeader(text.replace(from, to), data), "edit.safetensors"),
      CheckpointError,
      "edit.safetensors",
      /checksum mismatch/,
    );
  }
});

Deno.test("checkpoint: RNG state and step are validated on load, even under a valid checksum", async () => {
  const bytes = await encodeCheckpoint(CKPT);
  const { text, data } = headerOf(bytes);
  const cases: [string, string, RegExp][] = [
    ['\\"counter\\":123456', '\\"counter\\":\\"x\\"', /rng.*"counter" must be an integer/],
    ['\\"counter\\":123456', '\\"counter\\":-1', /"counter" must be an integer/],
    ['\\"seed\\":7', '\\"seed\\":0.5', /"seed" must be an integer/],
    [
      '\\"counter\\":123456',
      '\\"counter\\":123456,\\"key\\":[1,4294967296]',
      /"key" must be a word/,
    ],
    ['"step":"1500"', '"step":""', /step "" is not an integer/],
    ['"step":"1500"', '"step":"1e3"', /step "1e3"/],
    ['"step":"1500"', '"step":"-5"', /step "-5"/],
  ];
  for (const [from, to, re] of cases) {
    const b = reChecksum(withHeader(text.replace(from, to), data));
    await rejectsNaming(() => decodeCheckpoint(b, "rng.safetensors"), CheckpointError, "rng", re);
  }
  // Extra generator words that are valid pass through.
  const ok = reChecksum(
    withHeader(text.replace('\\"seed\\":7', '\\"seed\\":7,\\"key\\":[1,2]'), data),
  );
  assert.deepEqual(decodeCheckpoint(ok).rng, { seed: 7, key: [1, 2], counter: 123456 });
  await assert.rejects(
    encodeCheckpoint({ ...CKPT, rng: { seed: 1, counter: Number.NaN } }),
    /checkpoint rng.*"counter"/,
  );
});

Deno.test("checkpoint: version-1 files (data-only checksum) still load; their RNG state is validated", async () => {
  const { text, data } = headerOf(await encodeCheckpoint(CKPT));
  const head = JSON.parse(text);
  delete head.__metadata__.file_crc32;
  head.__metadata__.format_version = "1";
  const v1 = withHeader(JSON.stringify(head), data);
  const ck = decodeCheckpoint(v1, "v1.safetensors");
  assert.equal(ck.step, 1500);
  assert.deepEqual(ck.rng, CKPT.rng);
  assert.deepEqual(Array.from(await ck.model["fc.bias"]!.data()), [0.5, -0.5]);
  head.__metadata__.rng = JSON.stringify({ seed: 7, counter: "x" });
  await rejectsNaming(
    () => decodeCheckpoint(withHeader(JSON.stringify(head), data), "v1x.safetensors"),
    CheckpointError,
    "v1x.safetensors",
    /rng/,
  );
  // A version-2 file whose checksum field was damaged is not mistaken for version 1.
  const v2 = await encodeCheckpoint(CKPT);
  const broken = v2.slice();
  broken[10] ^= 1; // inside "__metadata__": the prefix no longer matches
  assert.throws(() => decodeCheckpoint(broken), CheckpointError);
});

// ---------------------------------------------------------------- typed errors

Deno.test("decodeNpz: a Zip64 extra field past the end is a FileFormatError naming the file", async () => {
  const z = encodeNpz({ a: { shape: [2], data: new Float32Array([1, 2]) } });
  const dv = new DataView(z.buffer);
  let cd = -1;
  for (let i = 0; i + 4 <= z.length; i++) if (dv.getUint32(i, true) === 0x02014b50) cd = i;
  // The finding: sizes saturated at 0xFFFFFFFF and an extra field longer than the file.
  const past = z.slice(), pdv = new DataView(past.buffer);
  pdv.setUint32(cd + 24, 0xffffffff, true);
  pdv.setUint16(cd + 30, 0xfff0, true);
  await rejectsNaming(decodeNpz(past, "z64.npz"), FileFormatError, "z64.npz", /past the end/);
  // An extra field that holds fewer 8-byte values than the saturated fields need.
  const nlen = dv.getUint16(cd + 28, true);
  const short = concatBytes([
    z.subarray(0, cd + 46 + nlen),
    new Uint8Array([1, 0, 4, 0, 0, 0, 0, 0]), // Zip64 extra field with 4 bytes
    z.subarray(cd + 46 + nlen),
  ]);
  const sdv = new DataView(short.buffer);
  sdv.setUint32(cd + 24, 0xffffffff, true);
  sdv.setUint16(cd + 30, 8, true);
  await rejectsNaming(decodeNpz(short, "z64s.npz"), FileFormatError, "z64s.npz", /too short/);
});

Deno.test("decodePng: an IHDR shorter than 13 bytes, a 0×N image and a late IHDR are FileFormatErrors", async () => {
  const idat = { type: "IDAT", data: await compress(new Uint8Array(2), "deflate") };
  const iend = { type: "IEND", data: new Uint8Array(0) };
  const ihdr = (w: number, h: number) => {
    const d = new Uint8Array(13);
    new DataView(d.buffer).setUint32(0, w);
    new DataView(d.buffer).setUint32(4, h);
    d[8] = 8;
    return { type: "IHDR", data: d };
  };
  const short = { type: "IHDR", data: ihdr(1, 1).data.subarray(0, 9) };
  await rejectsNaming(decodePng(png([short, idat, iend]), "s.png"), FileFormatError, "s.png", /13/);
  await rejectsNaming(
    decodePng(png([ihdr(0, 5), idat, iend]), "z.png"),
    FileFormatError,
    "z.png",
    /0×5/,
  );
  await rejectsNaming(
    decodePng(png([ihdr(5, 0), idat, iend]), "z.png"),
    FileFormatError,
    "z.png",
    /5×0/,
  );
  await rejectsNaming(
    decodePng(png([idat, ihdr(1, 1), iend]), "o.png"),
    FileFormatError,
    "o.png",
    /IHDR/,
  );
  // The good file decodes.
  assert.equal((await decodePng(png([ihdr(1, 1), idat, iend]))).data.length, 1);
});

Deno.test("safetensors: a tensor named __proto__ is a plain entry, and maxBytes caps the decoded size", () => {
  const h = '{"__proto__":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}';
  const t = decodeSafetensors(withHeader(h, new Uint8Array(4)));
  assert.ok(Object.hasOwn(t, "__proto__"));
  assert.equal(Object.getPrototypeOf(t), Object.prototype);
  const b = encodeSafetensors({ w: { shape: [3], data: new Float32Array(3) } });
  assert.throws(() => decodeSafetensors(b, "w.st", { maxBytes: 8 }), /w\.st.*above the limit of 8/);
});

// ---------------------------------------------------------------- limits

const rssMiB = () => Deno.memoryUsage().rss / 2 ** 20;

Deno.test("decodePng: a 1×1 PNG whose data inflates to 16 MiB is refused without inflating it all", async () => {
  const bomb = await compress(new Uint8Array(16 << 20), "deflate");
  const ihdr = new Uint8Array(13);
  new DataView(ihdr.buffer).setUint32(0, 1);
  new DataView(ihdr.buffer).setUint32(4, 1);
  ihdr[8] = 8; // 8-bit gray: 2 bytes of filtered data
  const file = png([{ type: "IHDR", data: ihdr }, { type: "IDAT", data: bomb }, {
    type: "IEND",
    data: new Uint8Array(0),
  }]);
  const before = rssMiB();
  await rejectsNaming(
    decodePng(file, "bomb.png"),
    FileFormatError,
    "bomb.png",
    /more than the 2 bytes/,
  );
  assert.ok(rssMiB() - before < 64, `RSS grew by ${(rssMiB() - before).toFixed(0)} MiB`);
  // Declaring far more than the compressed data can hold is refused before inflating.
  new DataView(ihdr.buffer).setUint32(0, 30000);
  new DataView(ihdr.buffer).setUint32(4, 30000);
  const big = png([{ type: "IHDR", data: ihdr }, {
    type: "IDAT",
    data: await compress(new Uint8Array(100), "deflate"),
  }, { type: "IEND", data: new Uint8Array(0) }]);
  await rejectsNaming(decodePng(big, "big.png"), FileFormatError, "big.png", /can hold at most/);
  await rejectsNaming(
    decodePng(big, "cap.png", { maxBytes: 1000 }),
    FileFormatError,
    "cap.png",
    /limit/,
  );
});

Deno.test("decodeNpz: a deflated member inflating past its declared size, or declaring more than its data holds, is refused", async () => {
  // A member whose declared size (and CRC) is of 128 bytes but whose data inflates to 16 MiB.
  const big = new Uint8Array(16 << 20);
  const z = await zip([{ name: "a.npy", data: big, deflate: true }]);
  const dv = new DataView(z.buffer);
  for (let i = 0; i + 4 <= z.length; i++) {
    if (dv.getUint32(i, true) === 0x02014b50) dv.setUint32(i + 24, 128, true);
  }
  const before = rssMiB();
  await rejectsNaming(decodeNpz(z, "bomb.npz"), FileFormatError, "bomb.npz", /more than the 128/);
  assert.ok(rssMiB() - before < 64, `RSS grew by ${(rssMiB() - before).toFixed(0)} MiB`);
  // A declared size that the compressed bytes cannot hold.
  for (let i = 0; i + 4 <= z.length; i++) {
    if (dv.getUint32(i, true) === 0x02014b50) dv.setUint32(i + 24, 100 << 20, true);
  }
  await rejectsNaming(decodeNpz(z, "decl.npz"), FileFormatError, "decl.npz", /can hold at most/);
});

Deno.test("decodeNpy: a shape whose element count overflows (to NaN) is refused, not read as empty", () => {
  const craft = (shape: string, body = new Uint8Array(0)) => {
    const h = enc.encode(`{'descr': '<f4', 'fortran_order': False, 'shape': (${shape}), }\n`);
    const out = new Uint8Array(10 + h.length + body.length);
    out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
    new DataView(out.buffer).setUint16(8, h.length, true);
    out.set(h, 10);
    out.set(body, 10 + h.length);
    return out;
  };
  const huge = "9".repeat(200);
  // Before: Infinity · 0 = NaN elements, "accepted" as an empty array.
  assert.throws(
    () => decodeNpy(craft(`${huge}, ${huge}, 0`), "nan.npy"),
    /nan\.npy.*not a tuple of integers/,
  );
  assert.throws(
    () => decodeNpy(craft("4294967296, 4294967296, 4294967296"), "big.npy"),
    (e: Error) => e instanceof FileFormatError && /more than 2\^53/.test(e.message),
  );
  assert.throws(() => decodeNpy(craft("3,,4"), "g.npy"), FileFormatError);
  assert.throws(() => decodeNpy(craft("1000,"), "t.npy"), /truncated/);
  assert.throws(
    () => decodeNpy(craft("100,", new Uint8Array(400)), "cap.npy", { maxBytes: 100 }),
    /cap\.npy.*above the limit of 100/,
  );
  assert.deepEqual(decodeNpy(craft("0, 5")).shape, [0, 5]); // empty arrays stay valid
});

Deno.test("decodeIdx/loadFashionMnist: gzip inflation stops at the declared size; 0 items are refused", async () => {
  const labels = idxRaw([10], (i) => i % 10);
  const bomb = await compress(concatBytes([labels, new Uint8Array(16 << 20)]), "gzip");
  const before = rssMiB();
  await rejectsNaming(
    decodeIdx(bomb, "bomb.gz", { dims: 1 }),
    FileFormatError,
    "bomb.gz",
    /more data/,
  );
  assert.ok(rssMiB() - before < 64, `RSS grew by ${(rssMiB() - before).toFixed(0)} MiB`);
  await rejectsNaming(
    decodeIdx(await compress(idxRaw([0], () => 0), "gzip"), "empty.gz"),
    FileFormatError,
    "empty.gz",
    /extent is 0/,
  );
  const lying = idxRaw([3, 4, 4], () => 1);
  new DataView(lying.buffer).setUint32(4, 0x7fffffff); // declares 2^31 items of 16 bytes
  await rejectsNaming(
    decodeIdx(await compress(lying, "gzip"), "lie.gz"),
    FileFormatError,
    "lie.gz",
    /declares/,
  );
  await rejectsNaming(decodeIdx(labels, "l.idx", { dims: 3 }), FileTypeError, "l.idx", /magic/);
  // Through loadFashionMnist: a labels file declaring 0 items.
  const dir = await Deno.makeTempDir({ prefix: "robust_idx_" });
  try {
    await Deno.writeFile(
      `${dir}/t10k-images-idx3-ubyte.gz`,
      await compress(idxRaw([2, 28, 28], () => 0), "gzip"),
    );
    await Deno.writeFile(
      `${dir}/t10k-labels-idx1-ubyte.gz`,
      await compress(idxRaw([0], () => 0), "gzip"),
    );
    await rejectsNaming(
      loadFashionMnist({ dir, split: "test" }),
      FileFormatError,
      `${dir}/t10k-labels-idx1-ubyte.gz`,
      /extent is 0/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------- URL fetches

Deno.test("URL loads time out with a FetchError naming the URL (host silent, or body stalled)", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  let stallBody = false;
  const accepting = (async () => {
    for await (const c of listener) {
      conns.push(c);
      if (stallBody) {
        await c.read(new Uint8Array(4096));
        await c.write(enc.encode("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nabc"));
      }
    }
  })();
  const base = `http://127.0.0.1:${listener.addr.port}`;
  try {
    const t0 = performance.now();
    await rejectsNaming(
      loadSafetensors(`${base}/w.safetensors`, { timeoutMs: 200 }),
      FetchError,
      `${base}/w.safetensors`,
      /no complete response within 200 ms/,
    );
    assert.ok(performance.now() - t0 < 5000);
    await rejectsNaming(
      loadCheckpoint(`${base}/c.safetensors`, { timeoutMs: 150 }),
      FetchError,
      base,
    );
    stallBody = true;
    await rejectsNaming(loadNpz(`${base}/d.npz`, { timeoutMs: 300 }), FetchError, `${base}/d.npz`);
  } finally {
    listener.close();
    for (const c of conns) {
      try {
        c.close();
      } catch { /* closed by the client */ }
    }
    await accepting.catch(() => {});
  }
});

// ---------------------------------------------------------------- labelled arrays

Deno.test("loadArrayDataset: fractional, huge or negative labels and NaN/Inf data are refused naming file and index", async () => {
  const dir = await Deno.makeTempDir({ prefix: "robust_arrays_" });
  const x = { shape: [3, 2], data: new Float32Array([0, 1, 2, 3, 4, 5]) };
  const save = (name: string, labels: number[], data = x.data, dtype: "<f8" | "<i8" = "<f8") =>
    saveNpz(`${dir}/${name}`, {
      x: { shape: x.shape, data },
      labels: { shape: [labels.length], data: new Float32Array(labels), dtype },
    });
  try {
    await save("frac.npz", [0, 0.5, 1]);
    await rejectsNaming(
      loadArrayDataset(`${dir}/frac.npz`),
      FileFormatError,
      `${dir}/frac.npz`,
      /0\.5 at index 1/,
    );
    await save("huge.npz", [0, 1e8, 1], x.data, "<i8");
    const t0 = performance.now();
    await rejectsNaming(
      loadArrayDataset(`${dir}/huge.npz`),
      FileFormatError,
      `${dir}/huge.npz`,
      /100000000 at index 1/,
    );
    assert.ok(performance.now() - t0 < 2000);
    await save("neg.npz", [0, 1, -1], x.data, "<i8");
    await rejectsNaming(
      loadArrayDataset(`${dir}/neg.npz`),
      FileFormatError,
      `${dir}/neg.npz`,
      /-1 at index 2/,
    );
    await save("nan.npz", [0, 1, 2], new Float32Array([0, 1, 2, NaN, 4, 5]));
    await rejectsNaming(
      loadArrayDataset(`${dir}/nan.npz`),
      FileFormatError,
      `${dir}/nan.npz`,
      /NaN at flat index 3 \(row 1/,
    );
    await save("inf.npz", [0, 1, 2], new Float32Array([0, 1, 2, 3, 4, -Infinity]));
    await rejectsNaming(
      loadArrayDataset(`${dir}/inf.npz`),
      FileFormatError,
      `${dir}/inf.npz`,
      /-Infinity at flat index 5/,
    );
    await save("data.npz", [2, 0, 1], x.data, "<i8");
    const ok = await loadArrayDataset(dir);
    assert.deepEqual(Array.from(ok.labels), [2, 0, 1]);
    assert.equal(ok.numClasses, 3);
    assert.equal(ok.dim, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
