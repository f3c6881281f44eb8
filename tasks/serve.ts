/**
 * @file `deno task serve` — serve the repository over HTTP on 127.0.0.1 with the content
 * types browsers and `deno run <url>` need: `.ts` as `application/typescript` (Debian's
 * `/etc/mime.types` maps `.ts` to a Qt type, so `python3 -m http.server` makes Deno parse
 * TypeScript as JavaScript), `.js`/`.mjs` as `text/javascript`, `.wasm` as
 * `application/wasm`, and HTML, JSON, source maps, PNG, GIF and SVG.
 *
 *   deno task serve                 # http://127.0.0.1:8000/examples/web/
 *   deno task serve --port 9000 --root dist
 * @module
 */
import { type FlagSpec, parseFlags } from "../cli/mod.ts";

const TYPES: Record<string, string> = {
  ".ts": "application/typescript; charset=utf-8",
  ".mts": "application/typescript; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".jsonl": "application/x-ndjson; charset=utf-8",
  ".wasm": "application/wasm",
  ".html": "text/html; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".md": "text/markdown; charset=utf-8",
  ".txt": "text/plain; charset=utf-8",
  ".png": "image/png",
  ".gif": "image/gif",
  ".svg": "image/svg+xml",
  ".safetensors": "application/octet-stream",
  ".npy": "application/octet-stream",
  ".npz": "application/octet-stream",
};

/**
 * The `content-type` this server sends for a path (by extension; `text/plain` otherwise,
 * as raw file hosts do, so Deno still treats an unknown module as TypeScript-free text).
 *
 * @example
 * ```ts
 * import { contentType } from "./serve.ts";
 * import { strict as assert } from "node:assert";
 * assert.equal(contentType("/lib/tensor.ts"), "application/typescript; charset=utf-8");
 * assert.equal(contentType("/dist/flowgpu.js"), "text/javascript; charset=utf-8");
 * assert.equal(contentType("/x.wasm"), "application/wasm");
 * ```
 */
export function contentType(path: string): string {
  const name = path.slice(path.lastIndexOf("/") + 1);
  const dot = name.lastIndexOf(".");
  return (dot >= 0 ? TYPES[name.slice(dot).toLowerCase()] : undefined) ??
    "text/plain; charset=utf-8";
}

/**
 * A request handler serving files under `root` (a directory URL or path): `/dir/` serves
 * `dir/index.html`, `..` and NUL are refused, missing files are 404 (a missing
 * `/favicon.ico` is 204), and nothing is cached.
 *
 * @example
 * ```ts
 * import { fileHandler } from "./serve.ts";
 * import { strict as assert } from "node:assert";
 * const res = await fileHandler(new URL("../", import.meta.url))(new Request("http://x/deno.json"));
 * assert.equal(res.status, 200);
 * assert.equal(res.headers.get("content-type"), "application/json; charset=utf-8");
 * await res.body?.cancel();
 * ```
 */
export function fileHandler(root: URL | string): (req: Request) => Promise<Response> {
  let base = root instanceof URL ? root.href : new URL(root, `file://${Deno.cwd()}/`).href;
  if (!base.endsWith("/")) base += "/";
  return async (req: Request): Promise<Response> => {
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("method not allowed", { status: 405 });
    }
    let path: string;
    try {
      path = decodeURIComponent(new URL(req.url).pathname);
    } catch {
      return new Response("bad path", { status: 400 });
    }
    if (path.split("/").includes("..") || path.includes("\0")) {
      return new Response("bad path", { status: 400 });
    }
    if (path.endsWith("/")) path += "index.html";
    const url = new URL(`.${path}`, base);
    try {
      const stat = await Deno.stat(url);
      if (stat.isDirectory) {
        return new Response(null, { status: 301, headers: { location: `${path}/` } });
      }
      const body = req.method === "HEAD" ? null : await Deno.readFile(url);
      return new Response(body, {
        headers: { "content-type": contentType(path), "cache-control": "no-store" },
      });
    } catch {
      // Browsers ask every site for an icon: "none" is not an error worth a console line.
      if (path === "/favicon.ico") return new Response(null, { status: 204 });
      return new Response("not found", { status: 404 });
    }
  };
}

/** A running server. */
export interface Served {
  /** `http://127.0.0.1:PORT` (no trailing slash). */
  url: string;
  /** Stop the server. */
  close(): Promise<void>;
}

/**
 * Serve `root` on 127.0.0.1 (`port` 0 picks a free port).
 *
 * @example
 * ```ts
 * import { serveFiles } from "./serve.ts";
 * import { strict as assert } from "node:assert";
 * const srv = serveFiles(new URL("../", import.meta.url), 0);
 * const res = await fetch(`${srv.url}/mod.ts`);
 * assert.equal(res.headers.get("content-type"), "application/typescript; charset=utf-8");
 * await res.body?.cancel();
 * await srv.close();
 * ```
 */
export function serveFiles(root: URL | string, port = 0, quiet = true): Served {
  const server = Deno.serve(
    {
      hostname: "127.0.0.1",
      port,
      onListen: quiet ? () => {} : ({ port }) => {
        console.log(`serving ${String(root)} on http://127.0.0.1:${port}/ (Ctrl-C to stop)`);
        console.log(`  the browser demo: http://127.0.0.1:${port}/examples/web/`);
      },
    },
    fileHandler(root),
  );
  return { url: `http://127.0.0.1:${server.addr.port}`, close: () => server.shutdown() };
}

const FLAGS = [
  { name: "port", type: "int", default: 8000, min: 0, max: 65535, help: "TCP port (0: any)" },
  { name: "root", type: "string", default: ".", help: "directory to serve" },
] as const satisfies readonly FlagSpec[];

if (import.meta.main) {
  const f = parseFlags(Deno.args, FLAGS, {
    task: "serve",
    usage: "Serve the repository on 127.0.0.1 with the right content types (.ts, .js, .wasm).",
  });
  if (f) serveFiles(f.root, f.port, false);
}
