// The JS twin of the Python bench workers: a JSON hello and a one-object counter (bench/server_bench.py).
import { DurableObject } from "cloudflare:workers";

export class Counter extends DurableObject {
  async increment() {
    const n = ((await this.ctx.storage.get("n")) ?? 0) + 1;
    await this.ctx.storage.put("n", n);
    return n;
  }
}

export default {
  async fetch(request, env) {
    const { pathname } = new URL(request.url);
    if (pathname === "/hello") return Response.json({ hello: "world" });
    const match = pathname.match(/^\/incr\/([^/]+)$/);
    if (match && request.method === "POST") {
      return Response.json({ n: await env.COUNTER.getByName(match[1]).increment() });
    }
    return new Response("not found", { status: 404 });
  },
};
