import { strict as assert } from "node:assert";
import { gunzipSync, gzipSync } from "node:zlib";
import {
  Batcher,
  checkerboard,
  eightGaussians,
  gatherRows,
  Generator,
  loadFashionMnist,
  loadImageFolder,
  moons,
  sampleToy,
  shuffledBatches,
  spirals,
  TOY_NAMES,
} from "../../mod.ts";
import { encodePng } from "../../lib/formats/png.ts";
import { assertClose } from "../_helpers.ts";

const FMNIST = "/usr/share/datasets/fashion-mnist";

Deno.test("checkerboard: samples fill exactly the 8 even cells of [−2, 2]², about 1/8 each", async () => {
  const n = 8000;
  const x = await checkerboard(n, { generator: new Generator(3) }).data();
  const counts = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const a = x[2 * i]!, b = x[2 * i + 1]!;
    assert.ok(a >= -2 && a <= 2 && b >= -2 && b <= 2, `point ${i} (${a}, ${b}) outside the board`);
    const ci = Math.floor(a) + 2, cj = Math.floor(b) + 2;
    assert.equal((ci + cj) % 2, 0, `point ${i} (${a}, ${b}) in an odd cell`);
    counts.set(`${ci},${cj}`, (counts.get(`${ci},${cj}`) ?? 0) + 1);
  }
  assert.equal(counts.size, 8);
  for (const [cell, c] of counts) {
    assert.ok(Math.abs(c / n - 1 / 8) < 0.02, `cell ${cell}: ${c / n}`);
  }
});

Deno.test("moons: noiseless points lie on TC's two affine half-circles; noisy means match", async () => {
  const n = 2000;
  const x = await moons(n, { noise: 0, generator: new Generator(1) }).data();
  let outer = 0;
  for (let i = 0; i < n; i++) {
    const u = (x[2 * i]! + 1) / 3, v = (x[2 * i + 1]! + 1) / 3;
    const onOuter = Math.abs(u * u + v * v - 1) < 1e-5 && v >= -1e-6;
    const onInner = Math.abs((u - 1) ** 2 + (v - 0.5) ** 2 - 1) < 1e-5 && v <= 0.5 + 1e-6;
    assert.ok(onOuter || onInner, `point ${i} is on neither moon`);
    assert.ok(x[2 * i]! >= -4 && x[2 * i]! <= 5 && x[2 * i + 1]! >= -2.5 && x[2 * i + 1]! <= 2);
    if (onOuter) outer++;
  }
  assert.ok(Math.abs(outer / n - 0.5) < 0.05, `outer fraction ${outer / n}`);
  // E[x] = 3·0.5 − 1, E[y] = 3·(½·2/π + ½·(½ − 2/π)) − 1 = −0.25 for any noise level.
  const y = await moons(20000, { noise: 0.2, generator: new Generator(2) }).data();
  let mx = 0, my = 0;
  for (let i = 0; i < 20000; i++) [mx, my] = [mx + y[2 * i]! / 20000, my + y[2 * i + 1]! / 20000];
  assert.ok(Math.abs(mx - 0.5) < 0.05 && Math.abs(my + 0.25) < 0.05, `mean (${mx}, ${my})`);
});

Deno.test("eightGaussians: 8 equally likely modes at radius 5 with TC's std 0.1^¼", async () => {
  const n = 8000;
  const x = await eightGaussians(n, { generator: new Generator(4) }).data();
  const angles = Array.from({ length: 8 }, (_, k) => k);
  const s = Math.SQRT1_2;
  const centers = [[1, 0], [-1, 0], [0, 1], [0, -1], [s, s], [s, -s], [-s, s], [-s, -s]].map((
    c,
  ) => c.map((v) => 5 * v));
  const counts = new Array(8).fill(0);
  let ss = 0;
  for (let i = 0; i < n; i++) {
    const d = centers.map((c) => (x[2 * i]! - c[0]!) ** 2 + (x[2 * i + 1]! - c[1]!) ** 2);
    const k = d.indexOf(Math.min(...d));
    counts[k]++;
    ss += d[k]!;
  }
  for (const k of angles) assert.ok(Math.abs(counts[k] / n - 1 / 8) < 0.02, `mode ${k}`);
  const std = Math.sqrt(ss / (2 * n));
  assert.ok(Math.abs(std - Math.pow(0.1, 0.25)) < 0.02, `per-axis std ${std}`);
});

Deno.test("sampleToy: every name works, is deterministic per seed, and unknown names are rejected", async () => {
  for (const name of TOY_NAMES) {
    const a = await sampleToy(name, 64, new Generator(9)).data();
    const b = await sampleToy(name, 64, new Generator(9)).data();
    const c = await sampleToy(name, 64, new Generator(10)).data();
    assert.deepEqual(a, b, `${name} is reproducible`);
    assert.notDeepEqual(a, c, `${name} depends on the seed`);
    assert.ok(a.every(Number.isFinite));
  }
  const sp = await spirals(4000, { generator: new Generator(0) }).data();
  let r = 0;
  for (let i = 0; i < 4000; i++) r = Math.max(r, Math.hypot(sp[2 * i]!, sp[2 * i + 1]!));
  assert.ok(r < (3 * Math.PI + 1) / 3 + 0.6 && r > 2.5, `spiral radius ${r}`);
  assert.throws(() => sampleToy("swissroll", 4), /Unknown toy "swissroll"/);
  assert.throws(() => checkerboard(0), /number of samples/);
});

Deno.test("loadFashionMnist: real files match an independent zlib decode and known facts", async () => {
  const test = await loadFashionMnist({ dir: FMNIST, split: "test" });
  assert.equal(test.n, 10000);
  assert.equal(test.total, 10000);
  assert.deepEqual(test.shape, [1, 28, 28]);
  assert.equal(test.images.length, 10000 * 784);
  const rawLabels = gunzipSync(await Deno.readFile(`${FMNIST}/t10k-labels-idx1-ubyte.gz`));
  assert.deepEqual(Array.from(test.labels), Array.from(rawLabels.subarray(8)));
  // Fashion-MNIST's test split is balanced: 1000 images per class.
  const counts = new Array(10).fill(0);
  for (const l of test.labels) counts[l]++;
  assert.deepEqual(counts, new Array(10).fill(1000));

  const train = await loadFashionMnist({ dir: FMNIST, split: "train", limit: 50 });
  assert.equal(train.n, 50);
  assert.equal(train.total, 60000);
  assert.equal(train.labels[0], 9, "the first training image is an ankle boot");
  assert.equal(train.classNames[train.labels[0]!], "Ankle boot");
  const rawImg = gunzipSync(await Deno.readFile(`${FMNIST}/train-images-idx3-ubyte.gz`));
  const expect = Array.from(rawImg.subarray(16, 16 + 50 * 784), (b) => b / 127.5 - 1);
  assertClose(train.images, expect, { atol: 1e-6 });
  assert.ok(train.images.every((v) => v >= -1 && v <= 1));
});

Deno.test("loadFashionMnist: truncated or corrupted copies raise typed errors naming the file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "h5_fmnist_" });
  try {
    const labels = gunzipSync(await Deno.readFile(`${FMNIST}/t10k-labels-idx1-ubyte.gz`));
    const imgGz = await Deno.readFile(`${FMNIST}/t10k-images-idx3-ubyte.gz`);
    const lblPath = `${dir}/t10k-labels-idx1-ubyte.gz`,
      imgPath = `${dir}/t10k-images-idx3-ubyte.gz`;
    await Deno.writeFile(lblPath, gzipSync(labels));
    // 1. A truncated gzip stream.
    await Deno.writeFile(imgPath, imgGz.subarray(0, imgGz.length >> 1));
    await assert.rejects(
      () => loadFashionMnist({ dir, split: "test" }),
      (e: Error) => e instanceof TypeError && e.message.includes(imgPath),
    );
    // 2. A valid gzip of a truncated IDX file.
    const raw = gunzipSync(imgGz);
    await Deno.writeFile(imgPath, gzipSync(raw.subarray(0, 16 + 784 * 10 + 100)));
    await assert.rejects(
      () => loadFashionMnist({ dir, split: "test" }),
      (e: Error) =>
        e instanceof RangeError && e.message.includes(imgPath) && /bytes/.test(e.message),
    );
    // ...which still loads when only the complete images are asked for.
    assert.equal((await loadFashionMnist({ dir, split: "test", limit: 10 })).n, 10);
    // 3. A wrong magic number (labels file where images are expected).
    await Deno.writeFile(imgPath, gzipSync(labels));
    await assert.rejects(
      () => loadFashionMnist({ dir, split: "test" }),
      (e: Error) =>
        e instanceof TypeError && e.message.includes(imgPath) && /magic/.test(e.message),
    );
    // 4. Label count disagreeing with the image count.
    await Deno.writeFile(imgPath, imgGz);
    const short = labels.slice(0, 8 + 5);
    new DataView(short.buffer).setUint32(4, 5);
    await Deno.writeFile(lblPath, gzipSync(short));
    await assert.rejects(
      () => loadFashionMnist({ dir, split: "test" }),
      /as many labels as images/,
    );
    // 5. A missing directory.
    await assert.rejects(() => loadFashionMnist({ dir: `${dir}/nope` }), /not found/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Batcher and shuffledBatches: deterministic by seed, each epoch a fresh permutation", () => {
  const a = new Batcher(10, 3, new Generator(5)), b = new Batcher(10, 3, new Generator(5));
  const epochs: number[][] = [];
  for (let e = 0; e < 3; e++) {
    const seen: number[] = [];
    for (let k = 0; k < a.batchesPerEpoch; k++) {
      const x = a.next();
      assert.deepEqual(x, b.next());
      assert.equal(a.epoch, e);
      seen.push(...x);
    }
    assert.equal(new Set(seen).size, 9, "no repeats within an epoch");
    epochs.push(seen);
  }
  assert.notDeepEqual(epochs[0], epochs[1], "epochs reshuffle");
  const all = [...shuffledBatches(10, 4, new Generator(1), { dropLast: false })];
  assert.deepEqual(all.map((x) => x.length), [4, 4, 2]);
  assert.deepEqual([...all.flatMap((x) => [...x])].sort((p, q) => p - q), [
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
  ]);
  assert.deepEqual(
    gatherRows(new Float32Array([1, 2, 3, 4, 5, 6]), 2, [2, 0, 2]),
    new Float32Array([5, 6, 1, 2, 5, 6]),
  );
  assert.throws(() => gatherRows(new Float32Array(4), 2, [2]), /row indices/);
  assert.throws(() => new Batcher(3, 4, new Generator(0)), /batch size/);
});

Deno.test("loadImageFolder: classes by sorted folder, pixels scaled to [−1, 1], resize and errors", async () => {
  const dir = await Deno.makeTempDir({ prefix: "h5_imgs_" });
  try {
    await Deno.mkdir(`${dir}/b_dog`);
    await Deno.mkdir(`${dir}/a_cat`);
    // 2×2 RGB: red, green / blue, white.
    const rgb = new Uint8Array([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255]);
    await Deno.writeFile(`${dir}/b_dog/1.png`, await encodePng(2, 2, rgb, { channels: 3 }));
    await Deno.writeFile(
      `${dir}/a_cat/1.png`,
      await encodePng(2, 2, new Uint8Array([0, 51, 102, 255]), { channels: 1 }),
    );
    await Deno.writeFile(`${dir}/a_cat/notes.txt`, new TextEncoder().encode("ignored"));
    const ds = await loadImageFolder(dir);
    assert.deepEqual(ds.classNames, ["a_cat", "b_dog"]);
    assert.deepEqual(Array.from(ds.labels), [0, 1]);
    assert.deepEqual(ds.shape, [3, 2, 2]);
    const g = [0, 51, 102, 255].map((v) => v / 127.5 - 1);
    assertClose(ds.images.slice(0, 12), [...g, ...g, ...g], { atol: 1e-6 });
    // CHW: the red plane of the dog is [1, −1, −1, 1].
    assertClose(ds.images.slice(12, 16), [1, -1, -1, 1], { atol: 1e-6 });
    const gray = await loadImageFolder(dir, { channels: 1 });
    assertClose(gray.images.slice(4, 8), [76.245, 149.685, 29.07, 255].map((v) => v / 127.5 - 1), {
      atol: 1e-5,
    });
    // Bilinear 2 -> 4 with pixel-centre alignment: row 0 of the cat is [0, 12.75, 38.25, 51].
    const big = await loadImageFolder(dir, { channels: 1, size: 4 });
    assertClose(big.images.slice(0, 4), [0, 12.75, 38.25, 51].map((v) => v / 127.5 - 1), {
      atol: 1e-5,
    });
    await Deno.writeFile(
      `${dir}/b_dog/2.png`,
      await encodePng(3, 1, new Uint8Array(3), { channels: 1 }),
    );
    await assert.rejects(() => loadImageFolder(dir), /2.png is 3×1/);
    await Deno.writeFile(`${dir}/b_dog/2.png`, new Uint8Array([1, 2, 3]));
    await assert.rejects(() => loadImageFolder(dir, { size: 2 }), /2\.png/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
