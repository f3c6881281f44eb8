/**
 * @file Examples run straight from a URL: serve the repository over HTTP on 127.0.0.1 and
 * `deno run http://127.0.0.1:PORT/examples/…` with no permission flags at all.
 */
import { strict as assert } from "node:assert";

const ROOT = new URL("../../", import.meta.url);

const TYPES: Record<string, string> = {
  ".ts": "application/typescript",
  ".json": "application/json",
};

function serveRepo(
  extra: Record<string, string> = {},
): { url: string; close: () => Promise<void> } {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname);
    if (extra[path]) return new Response(await Deno.readFile(extra[path]));
    if (path.includes("..")) return new Response("bad path", { status: 400 });
    try {
      const body = await Deno.readFile(new URL(`.${path}`, ROOT));
      const ext = path.slice(path.lastIndexOf("."));
      return new Response(body, { headers: { "content-type": TYPES[ext] ?? "text/plain" } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  return { url: `http://127.0.0.1:${server.addr.port}`, close: () => server.shutdown() };
}

Deno.test("examples/quickstart.ts runs from a URL with no permissions and reports W2 and KL", async () => {
  const srv = serveRepo();
  try {
    const out = await new Deno.Command("deno", {
      args: ["run", "--no-prompt", "--quiet", `${srv.url}/examples/quickstart.ts`, "300"],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    assert.ok(out.success, `quickstart from URL failed:\n${stderr}\n${stdout}`);
    const last = JSON.parse(stdout.trim().split("\n").pop()!);
    assert.equal(last.nfe, 50);
    // After 300 steps the model must already be far closer to the data than its noise input.
    assert.ok(last.w2 > 0 && last.w2 < 0.6 * last.w2Noise, JSON.stringify(last));
    assert.ok(Number.isFinite(last.kl) && last.kl >= 0, JSON.stringify(last));
  } finally {
    await srv.close();
  }
});

Deno.test("examples/sample_checkpoint.ts runs from a URL and loads a checkpoint from a URL", async () => {
  const { main: train } = await import("../../tasks/train_cfm.ts");
  const dir = await Deno.makeTempDir();
  await train([
    "--max-train-steps=20",
    "--batch-size=64",
    "--hidden=16",
    "--output-dir",
    dir,
    "--exp-name",
    "r",
    "--sample-every=0",
  ]);
  const srv = serveRepo({ "/__ckpt.safetensors": `${dir}/r/checkpoints/last.safetensors` });
  try {
    const out = await new Deno.Command("deno", {
      args: [
        "run",
        "--no-prompt",
        "--quiet",
        "--allow-net=127.0.0.1",
        `--allow-write=${dir}`,
        `${srv.url}/examples/sample_checkpoint.ts`,
        `${srv.url}/__ckpt.safetensors`,
        `${dir}/s.png`,
        "10",
      ],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.ok(out.success, `sample_checkpoint from URL failed:\n${stderr}`);
    assert.match(
      new TextDecoder().decode(out.stdout),
      /10 velocity evaluations, checkpoint step 20/,
    );
    const png = await Deno.readFile(`${dir}/s.png`);
    // PNG signature, then an IHDR chunk.
    assert.deepEqual([...png.subarray(0, 8)], [137, 80, 78, 71, 13, 10, 26, 10]);
  } finally {
    await srv.close();
    await Deno.remove(dir, { recursive: true });
  }
});
