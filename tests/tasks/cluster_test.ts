/**
 * `deno task cluster`: the seed's three files (read back with the project's NumPy reader, the
 * CSV parsed and checked against the centers), cluster_meta.json, the seed's flag spellings,
 * Fashion-MNIST labels, re-clustering saved latents, the typed errors, and the deno.json task
 * with its scoped permissions.
 */
import { strict as assert } from "node:assert";
import {
  Generator,
  getBackend,
  loadFashionMnist,
  loadNpy,
  sampleToy,
  saveNpy,
  setBackend,
} from "../../mod.ts";
import { main } from "../../tasks/cluster.ts";
import { assertClose, quiet } from "../_helpers.ts";

const ROOT = new URL("../../", import.meta.url);

/** Run on the CPU backend, restoring the previous backend afterwards. */
async function onCpu<T>(fn: () => Promise<T>): Promise<T> {
  const prev = getBackend().name as "cpu" | "webgpu";
  setBackend("cpu");
  try {
    return await fn();
  } finally {
    setBackend(prev);
  }
}

function parseCsv(text: string): { header: string[]; rows: number[][] } {
  const lines = text.trimEnd().split("\n");
  return {
    header: lines[0]!.split(","),
    rows: lines.slice(1).map((l) => l.split(",").map(Number)),
  };
}

/** Check the files against each other: shapes, dtypes, nearest-center assignments, inertia. */
async function checkOutputs(dir: string, n: number, d: number, k: number) {
  const centers = await loadNpy(`${dir}/cluster_centers.npy`);
  const latents = await loadNpy(`${dir}/latents.npy`);
  assert.equal(centers.dtype, "<f4");
  assert.deepEqual(centers.shape, [k, d]);
  assert.equal(latents.dtype, "<f4");
  assert.deepEqual(latents.shape, [n, d]);
  const csv = parseCsv(await Deno.readTextFile(`${dir}/assignments.csv`));
  assert.equal(csv.rows.length, n);
  const meta = JSON.parse(await Deno.readTextFile(`${dir}/cluster_meta.json`));
  assert.deepEqual([meta.k, meta.n, meta.d], [k, n, d]);
  let inertia = 0;
  const counts = new Array<number>(k).fill(0);
  csv.rows.forEach((row, i) => {
    assert.equal(row[0], i);
    const a = row[1]!;
    assert.ok(Number.isInteger(a) && a >= 0 && a < k, `row ${i}: cluster ${a}`);
    counts[a]!++;
    // Each sample is assigned to its nearest center (up to rounding on near ties).
    const dist = (j: number) => {
      let s = 0;
      for (let q = 0; q < d; q++) s += (latents.data[i * d + q]! - centers.data[j * d + q]!) ** 2;
      return s;
    };
    let best = Infinity;
    for (let j = 0; j < k; j++) best = Math.min(best, dist(j));
    assert.ok(dist(a) <= best + 1e-4 * (1 + best), `row ${i}: not assigned to its nearest center`);
    inertia += dist(a);
  });
  assert.deepEqual(meta.counts, counts);
  assertClose([meta.inertia], [inertia], { rtol: 1e-4 });
  return { centers, latents, csv, meta };
}

Deno.test("cluster main(): a toy dataset with the seed's flag spellings writes the seed's files", async () => {
  const out = await Deno.makeTempDir({ prefix: "cluster-toy-" });
  try {
    const r = await onCpu(() =>
      quiet(() =>
        main([
          "--dataset-name",
          "8gaussians",
          "--n_samples",
          "600",
          "--n_clusters",
          "8",
          "--out_dir",
          `${out}/res`,
          "--seed",
          "3",
        ])
      )
    );
    assert.ok(r && r.converged && r.iterations >= 1);
    const names = [];
    for await (const e of Deno.readDir(`${out}/res`)) names.push(e.name);
    assert.deepEqual(names.sort(), [
      "assignments.csv",
      "cluster_centers.npy",
      "cluster_meta.json",
      "latents.npy",
    ]);
    const { latents, csv, meta } = await checkOutputs(`${out}/res`, 600, 2, 8);
    assert.deepEqual(csv.header, ["index", "cluster"]);
    // latents are the toy samples drawn from Generator(seed).
    const want = await sampleToy("8gaussians", 600, new Generator(3)).data();
    assertClose(latents.data, want, { rtol: 0, atol: 0 });
    assert.equal(meta.seed, 3);
    assert.equal(meta.dataset, "8gaussians");
    assert.equal(meta.inertia, r.inertia);
    // 8 clusters on 8 well-separated modes: one mode each, about 600/8 samples.
    for (const c of meta.counts) assert.ok(c > 40 && c < 110, `cluster size ${c}`);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("cluster main(): Fashion-MNIST pixels in [-1, 1] with a label column; npy re-clustering", async () => {
  const out = await Deno.makeTempDir({ prefix: "cluster-fm-" });
  try {
    const argv = ["--dataset", "fashion-mnist", "--split", "test", "--n-samples", "300"];
    await onCpu(() =>
      quiet(() => main([...argv, "--n-clusters", "10", "--out-dir", out, "--max-iters", "20"]))
    );
    const { latents, csv } = await checkOutputs(out, 300, 784, 10);
    const ds = await loadFashionMnist({ split: "test", limit: 300 });
    assertClose(latents.data, ds.images, { rtol: 0, atol: 0 });
    assert.ok(latents.data.every((v) => v >= -1 && v <= 1));
    assert.deepEqual(csv.header, ["index", "cluster", "label"]);
    assert.deepEqual(csv.rows.map((r) => r[2]), Array.from(ds.labels));

    // Re-cluster the saved latents (a folder with latents.npy and labels.npy) into 4 groups.
    await saveNpy(`${out}/labels.npy`, { shape: [300], data: ds.labels });
    const out2 = `${out}/again`;
    await onCpu(() =>
      quiet(() =>
        main([
          "--dataset",
          "npy",
          "--data-dir",
          out,
          "--n-samples",
          "200",
          "--n-clusters",
          "4",
          "--out-dir",
          out2,
        ])
      )
    );
    const again = await checkOutputs(out2, 200, 784, 4);
    assert.deepEqual(again.csv.rows.map((r) => r[2]), Array.from(ds.labels.subarray(0, 200)));
    assertClose(again.latents.data, ds.images.subarray(0, 200 * 784), { rtol: 0, atol: 0 });
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("cluster main(): typed errors, and nothing is written when clustering fails", async () => {
  const out = await Deno.makeTempDir({ prefix: "cluster-err-" });
  try {
    const run = (...a: string[]) => onCpu(() => quiet(() => main(a)));
    await assert.rejects(
      () => run("--dataset", "moons", "--encoder", "stablevae", "--out-dir", `${out}/a`),
      (e: Error) => {
        assert.ok(e instanceof RangeError);
        assert.match(
          e.message,
          /--encoder stablevae: an autoencoder encodes images; use --dataset fashion-mnist/,
        );
        return true;
      },
    );
    await assert.rejects(
      () =>
        run("--dataset", "moons", "--n-samples", "5", "--n-clusters", "6", "--out-dir", `${out}/a`),
      /--n-clusters \(6\) to be at most --n-samples \(5\)/,
    );
    await assert.rejects(
      () => run("--dataset", "fashion-mnist", "--split", "test", "--n-samples", "20000"),
      /--n-samples <= 10000/,
    );
    await assert.rejects(() => run("--dataset", "imagenet256"), /--dataset to be one of/);
    await assert.rejects(() => run("--dataset", "npy"), /--dataset npy needs --data-dir/);
    // Non-finite data: a RangeError from kmeans, and no output folder.
    const x = new Float32Array(20).map((_, i) => i);
    x[7] = NaN;
    await saveNpy(`${out}/bad.npy`, { shape: [10, 2], data: x });
    await assert.rejects(
      () =>
        run(
          "--dataset",
          "npy",
          "--data-dir",
          `${out}/bad.npy`,
          "--n-samples",
          "10",
          "--n-clusters",
          "2",
          "--out-dir",
          `${out}/b`,
        ),
      (e: Error) => e instanceof RangeError && /finite values but found 1 NaN/.test(e.message),
    );
    assert.equal(await Deno.stat(`${out}/b`).catch(() => null), null);
    assert.equal(await Deno.stat(`${out}/a`).catch(() => null), null);
    // --help prints the usage and returns null.
    const lines: string[] = [];
    const log = console.log;
    console.log = (s: string) => lines.push(s);
    try {
      assert.equal(await main(["--help"]), null);
    } finally {
      console.log = log;
    }
    assert.match(lines.join("\n"), /--n-clusters <int>.*default: 100/);
    assert.match(lines.join("\n"), /cluster_centers\.npy/);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("deno task cluster runs with its scoped permissions; a bad encoder exits 2", async () => {
  const out = await Deno.makeTempDir({ prefix: "cluster-task-" });
  const task = (...args: string[]) =>
    new Deno.Command("deno", {
      args: ["task", "--quiet", "cluster", ...args],
      cwd: ROOT,
      env: { FLOWGPU_BACKEND: "cpu", XDG_RUNTIME_DIR: "/tmp" },
      stdout: "piped",
      stderr: "piped",
    }).output();
  try {
    const ok = await task(
      "--dataset",
      "moons",
      "--n-samples",
      "300",
      "--n-clusters",
      "4",
      "--out-dir",
      out,
    );
    const err = new TextDecoder().decode(ok.stderr);
    assert.equal(ok.code, 0, err);
    assert.match(err, /cluster: loading 300 samples of moons/);
    assert.match(err, /cluster .*inertia/);
    await checkOutputs(out, 300, 2, 4);
    const bad = await task("--dataset", "moons", "--encoder", "stablevae");
    assert.equal(bad.code, 2);
    assert.match(
      new TextDecoder().decode(bad.stderr),
      /--encoder stablevae: an autoencoder encodes images/,
    );
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
