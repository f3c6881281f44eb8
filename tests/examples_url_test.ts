/**
 * @file Examples run straight from a URL: serve the repository over HTTP on 127.0.0.1 and
 * `deno run http://127.0.0.1:PORT/examples/…` with no permission flags at all.
 */
import { strict as assert } from "node:assert";

const ROOT = new URL("../", import.meta.url);

const TYPES: Record<string, string> = {
  ".ts": "application/typescript",
  ".json": "application/json",
};

function serveRepo(): { url: string; close: () => Promise<void> } {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname);
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
