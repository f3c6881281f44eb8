/**
 * @file Checkpoints: round trip of every field, truncation and corruption detection,
 * CheckpointManager pruning, `last.safetensors`, and `latest()` falling back past corrupt
 * or failed writes.
 * @module
 */
import { strict as assert } from "node:assert";
import {
  CheckpointError,
  CheckpointManager,
  decodeCheckpoint,
  decodeSafetensorsWithMetadata,
  encodeCheckpoint,
  encodeSafetensors,
  loadCheckpoint,
  saveCheckpoint,
  tensor,
} from "../../mod.ts";
import { crc32 } from "../../lib/formats/_bytes.ts";

async function withTmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const values = async (t: { data(): Promise<Float32Array> }) => Array.from(await t.data());

Deno.test("saveCheckpoint/loadCheckpoint round-trip model, ema, optimizer, step, rng, config, extra", async () => {
  await withTmp(async (dir) => {
    const path = `${dir}/ck.safetensors`;
    await saveCheckpoint(path, {
      model: { "blocks.0.attn.qkv.weight": tensor([[1, 2], [3, 4]]), "head.bias": tensor([0.5]) },
      ema: {
        "blocks.0.attn.qkv.weight": tensor([[1.5, 2.5], [3.5, 4.5]]),
        "head.bias": tensor([0.25]),
      },
      optimizer: { "m.head.bias": tensor([0.1]), "v.head.bias": tensor([0.01]) },
      step: 1234,
      rng: { seed: 7, counter: 99 },
      config: { lr: 1e-4, loss: "stablevm", bank: [256, 1] },
      extra: { optimizerStep: 1234, bankCursor: 17 },
    });
    const ck = await loadCheckpoint(path);
    assert.equal(ck.step, 1234);
    assert.deepEqual(ck.rng, { seed: 7, counter: 99 });
    assert.deepEqual(ck.config, { lr: 1e-4, loss: "stablevm", bank: [256, 1] });
    assert.deepEqual(ck.extra, { optimizerStep: 1234, bankCursor: 17 });
    assert.deepEqual(Object.keys(ck.model).sort(), ["blocks.0.attn.qkv.weight", "head.bias"]);
    assert.deepEqual(ck.model["blocks.0.attn.qkv.weight"]!.shape, [2, 2]);
    assert.deepEqual(await values(ck.model["blocks.0.attn.qkv.weight"]!), [1, 2, 3, 4]);
    assert.deepEqual(await values(ck.ema!["head.bias"]!), [0.25]);
    assert.deepEqual(await values(ck.optimizer!["v.head.bias"]!), [Math.fround(0.01)]);
    // The file is plain safetensors with prefixed names and a CRC of the data section.
    const bytes = await Deno.readFile(path);
    const { tensors, metadata } = decodeSafetensorsWithMetadata(bytes);
    assert.ok(
      "model.head.bias" in tensors && "ema.head.bias" in tensors && "optim.m.head.bias" in tensors,
    );
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    assert.equal(metadata.data_crc32, crc32(bytes.subarray(8 + n)).toString(16).padStart(8, "0"));
    assert.equal(metadata.step, "1234");
    assert.equal(metadata.format, "flowgpu-checkpoint");
  });
});

Deno.test("loadCheckpoint detects truncation and corruption with a CheckpointError naming the file", async () => {
  await withTmp(async (dir) => {
    const bytes = await encodeCheckpoint({ model: { w: tensor([1, 2, 3, 4]) }, step: 5 });
    const cases: [string, Uint8Array, RegExp][] = [
      ["truncated.safetensors", bytes.subarray(0, bytes.length - 3), /truncated or corrupted/],
      ["header-cut.safetensors", bytes.subarray(0, 20), /truncated or corrupted/],
      [
        "flipped.safetensors",
        (() => {
          const b = bytes.slice();
          b[b.length - 2] ^= 0x40; // a bit in the last float
          return b;
        })(),
        /checksum mismatch/,
      ],
      [
        "extended.safetensors",
        new Uint8Array([...bytes, 0, 0, 0, 0]),
        /truncated or extended|truncated or corrupted/,
      ],
      [
        "plain.safetensors",
        encodeSafetensors({ w: { shape: [1], data: new Float32Array([1]) } }),
        /not a flowgpu checkpoint/,
      ],
    ];
    for (const [name, b, re] of cases) {
      const p = `${dir}/${name}`;
      await Deno.writeFile(p, b);
      await assert.rejects(loadCheckpoint(p), (e: unknown) => {
        assert.ok(e instanceof CheckpointError, `${name}: ${e}`);
        assert.ok(e instanceof RangeError);
        assert.ok(e.message.includes(p), `${name}: message lacks the path: ${e.message}`);
        assert.match(e.message, re);
        return true;
      });
    }
    assert.throws(
      () => decodeCheckpoint(bytes.subarray(0, bytes.length - 1), "x"),
      CheckpointError,
    );
    await assert.rejects(encodeCheckpoint({ model: {}, step: -1 }), /checkpoint step/);
  });
});

Deno.test("CheckpointManager writes step-NNNNNN files and last.safetensors, pruning to keep", async () => {
  await withTmp(async (dir) => {
    const mgr = new CheckpointManager(`${dir}/checkpoints`, { keep: 2 });
    assert.equal(await mgr.latest(), null);
    for (const step of [100, 200, 300]) {
      const p = await mgr.save(step, {
        model: { w: tensor([step]) },
        rng: { seed: 1, counter: step },
      });
      assert.equal(p, `${dir}/checkpoints/step-000${step}.safetensors`);
    }
    const names = [...Deno.readDirSync(`${dir}/checkpoints`)].map((e) => e.name).sort();
    assert.deepEqual(names, [
      "last.safetensors",
      "step-000200.safetensors",
      "step-000300.safetensors",
    ]);
    assert.deepEqual(await mgr.steps(), [200, 300]);
    const last = await loadCheckpoint(`${dir}/checkpoints/last.safetensors`);
    assert.equal(last.step, 300);
    assert.deepEqual(await values(last.model.w!), [300]);
    const found = await mgr.latest();
    assert.equal(found!.path, `${dir}/checkpoints/step-000300.safetensors`);
    assert.deepEqual(found!.checkpoint.rng, { seed: 1, counter: 300 });
    assert.throws(
      () => new CheckpointManager(dir, { keep: 0 }),
      /keep to be an integer >= 1 but found 0/,
    );
  });
});

Deno.test("CheckpointManager.latest skips a truncated newest checkpoint and falls back to the previous one", async () => {
  await withTmp(async (dir) => {
    const warnings: string[] = [];
    const mgr = new CheckpointManager(dir, { keep: 3, warn: (m) => warnings.push(m) });
    await mgr.save(1, { model: { w: tensor([1]) } });
    await mgr.save(2, { model: { w: tensor([2]) } });
    // A crash (non-atomic copy, disk full) truncated step 2 and last.safetensors.
    for (const p of [mgr.pathFor(2), mgr.lastPath]) {
      const b = await Deno.readFile(p);
      await Deno.writeFile(p, b.subarray(0, b.length - 2));
    }
    const found = await mgr.latest();
    assert.equal(found!.checkpoint.step, 1);
    assert.equal(found!.path, mgr.pathFor(1));
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /Skipping checkpoint .*step-000002\.safetensors/);
    // Every numbered file corrupt: last.safetensors is the final fallback.
    await mgr.save(3, { model: { w: tensor([3]) } });
    for (const s of [1, 2, 3]) await Deno.writeFile(mgr.pathFor(s), new Uint8Array([1, 2, 3]));
    const fb = await mgr.latest();
    assert.equal(fb!.path, mgr.lastPath);
    assert.equal(fb!.checkpoint.step, 3);
  });
});

Deno.test("a failed CheckpointManager.save leaves the previous checkpoint loadable", async () => {
  await withTmp(async (dir) => {
    const mgr = new CheckpointManager(dir, { warn: () => {} });
    await mgr.save(1, { model: { w: tensor([1, 1]) }, config: { a: 1 } });
    // Make the rename onto step-000002 fail: a non-empty directory occupies the name.
    await Deno.mkdir(`${mgr.pathFor(2)}/blocker`, { recursive: true });
    await assert.rejects(mgr.save(2, { model: { w: tensor([2, 2]) } }));
    const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(names, [
      "last.safetensors",
      "step-000001.safetensors",
      "step-000002.safetensors",
    ]);
    const found = await mgr.latest();
    assert.equal(found!.checkpoint.step, 1);
    assert.deepEqual(await values(found!.checkpoint.model.w!), [1, 1]);
    assert.equal((await loadCheckpoint(mgr.lastPath)).step, 1);
  });
});

Deno.test("checkpoints carry trainer state as state.* tensors (format version 2 only when present)", async () => {
  const withState = await encodeCheckpoint({
    model: { w: tensor([1]) },
    state: { "bank.data": { shape: [3], data: new Float32Array([1, 2, 3]) }, flag: tensor([7]) },
    step: 2,
  });
  const meta = decodeSafetensorsWithMetadata(withState).metadata;
  assert.equal(meta.format_version, "2");
  const ck = decodeCheckpoint(withState);
  assert.deepEqual(Object.keys(ck.state!).sort(), ["bank.data", "flag"]);
  assert.deepEqual([...await (ck.state!["bank.data"] as ReturnType<typeof tensor>).data()], [
    1,
    2,
    3,
  ]);
  // Without state the file stays version 1, readable by older readers.
  const plain = await encodeCheckpoint({ model: { w: tensor([1]) }, step: 2 });
  assert.equal(decodeSafetensorsWithMetadata(plain).metadata.format_version, "1");
  assert.equal(decodeCheckpoint(plain).state, undefined);
});
