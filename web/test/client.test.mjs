// Unit tests of the alignet client against an in-memory fake of the
// server's participant routes.
import assert from "node:assert/strict";
import { test } from "node:test";

import { AlignetClient, participantFromURL, retryable, ApiError } from "../dist/client.js";

function memoryStore() {
  const m = new Map();
  return { getItem: (k) => (m.has(k) ? m.get(k) : null), setItem: (k, v) => m.set(k, v), map: m };
}

function json(status, body, headers = {}) {
  return new Response(body === undefined ? "" : JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });
}

// fakeServer serves sessions of `trials` queries with the shapes of the
// real API (api/openapi.json: Session, Next, ServedQuery, Completion); fail(req) may return
// "network" (fetch rejects), a Response, or nothing to answer normally.
function fakeServer({ trials = 3, fail = () => undefined } = {}) {
  const s = { posts: [], stored: new Map(), sessions: new Map(), served: [], trials, fail, nextQ: 0 };
  const progress = () => {
    const answered = new Set([...s.stored.values()].map((j) => j.query_id)).size;
    const open = s.served.filter((q) => ![...s.stored.values()].some((j) => j.query_id === q.query_id)).length;
    return { trials: s.trials, answered, open, remaining: Math.max(s.trials - answered, 0) };
  };
  const completion = { code: "CC", redirect: "https://done.example/?cc=CC" };
  s.fetch = async (url, init = {}) => {
    const u = new URL(url);
    const req = { method: init.method || "GET", path: u.pathname, body: init.body ? JSON.parse(init.body) : undefined };
    assert.equal(init.headers.Authorization, "Bearer alg_test");
    const f = s.fail(req);
    if (f === "network") throw new TypeError("fetch failed");
    if (f) return f;
    if (req.method === "POST" && req.path.endsWith("/sessions")) {
      const key = req.body.platform + ":" + req.body.worker;
      const old = s.sessions.get(key);
      if (!old) s.sessions.set(key, "sess-" + (s.sessions.size + 1));
      const p = progress();
      const complete = p.answered >= s.trials;
      return json(old ? 200 : 201, {
        id: s.sessions.get(key), study: "s1", platform: req.body.platform, trials: s.trials, answered: p.answered,
        complete, progress: p, ...(complete ? { completion } : {}), created_at: "2025-01-01T00:00:00Z",
      });
    }
    if (req.method === "GET" && req.path.endsWith("/next")) {
      const answered = new Set([...s.stored.values()].map((j) => j.query_id));
      if (answered.size >= s.trials) return json(200, { queries: [], complete: true, progress: progress(), completion });
      const open = s.served.filter((q) => !answered.has(q.query_id));
      const n = Number(u.searchParams.get("n"));
      while (open.length < Math.min(n, s.trials - answered.size)) {
        const k = ++s.nextQ;
        const q = {
          query_id: "q" + k, items: ["a", "b", "c"],
          display: [{ label: "A" }, {}, { label: "C", image: "/v1/items/c/image?v=" + k }],
        };
        s.served.push(q);
        open.push(q);
      }
      return json(200, { queries: open.slice(0, n), complete: false, progress: progress() });
    }
    if (req.method === "POST" && req.path.endsWith("/judgments")) {
      s.posts.push(req.body);
      const j = req.body;
      const prev = [...s.stored.values()].find((x) => x.query_id === j.query_id);
      if (prev && prev.id !== j.id) return json(409, { error: { code: "conflict", message: "answered" } });
      s.stored.set(j.id, j);
      return json(202, { accepted: 1, ids: [j.id] });
    }
    return json(404, { error: { code: "not_found", message: req.path } });
  };
  return s;
}

function client(server, storage, extra = {}) {
  let n = 0;
  return new AlignetClient({
    server: "https://alignet.test", key: "alg_test", study: "s1", storage, fetch: server.fetch,
    sleep: () => Promise.resolve(), backoff: () => 0, newID: () => "j-" + ++n + "-" + Math.random().toString(36).slice(2), ...extra,
  });
}

const worker = { platform: "generic", worker: "w1", params: {}, preview: false };

test("participantFromURL reads Prolific, MTurk and generic links", () => {
  const p = participantFromURL("?PROLIFIC_PID=p1&STUDY_ID=st&SESSION_ID=se&k=x");
  assert.deepEqual(p, { platform: "prolific", worker: "p1", preview: false, params: { PROLIFIC_PID: "p1", STUDY_ID: "st", SESSION_ID: "se" } });
  const m = participantFromURL("?workerId=W&assignmentId=A&hitId=H&turkSubmitTo=https%3A%2F%2Fworkersandbox.mturk.com");
  assert.equal(m.platform, "mturk");
  assert.equal(m.params.turkSubmitTo, "https://workersandbox.mturk.com");
  assert.equal(m.preview, false);
  assert.equal(participantFromURL("?assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE&hitId=H").preview, true);
  assert.equal(participantFromURL("?worker=g1").worker, "g1");
  assert.equal(participantFromURL("", () => "anon-1").worker, "anon-1");
});

test("a session runs to completion and every answer is posted once", async () => {
  const srv = fakeServer({ trials: 3 });
  const c = client(srv, memoryStore());
  const s = await c.open(worker);
  assert.equal(s.id, "sess-1");
  for (let q; (q = await c.next()) !== null; ) c.answer(q, q.items[2], 1234.4);
  const done = await c.finish();
  assert.equal(done.redirect, "https://done.example/?cc=CC");
  assert.equal(srv.stored.size, 3);
  assert.equal(new Set([...srv.stored.values()].map((j) => j.query_id)).size, 3);
  for (const j of srv.stored.values()) {
    assert.deepEqual(j.items, ["a", "b", "c"]);
    assert.equal(j.odd, "c");
    assert.equal(j.rt_ms, 1234);
    assert.equal(j.worker, "w1");
  }
  assert.equal(c.unsent, 0);
});

test("failed posts are retried with the same judgment id", async () => {
  let failures = 0;
  const attempts = [];
  const srv = fakeServer({
    trials: 1,
    fail: (req) => {
      if (req.method !== "POST" || !req.path.endsWith("/judgments")) return undefined;
      attempts.push(req.body.id);
      failures++;
      if (failures <= 2) return "network";
      if (failures === 3) return json(503, { error: { code: "unavailable", message: "kafka" } }, { "Retry-After": "1" });
      if (failures === 4) return json(429, { error: { code: "rate_limited", message: "slow down", limit: "session" } }, { "Retry-After": "2" });
      return undefined;
    },
  });
  const waits = [];
  const c = client(srv, memoryStore(), { sleep: (ms) => { waits.push(ms); return Promise.resolve(); } });
  await c.open(worker);
  const q = await c.next();
  const j = c.answer(q, "a", 10);
  await c.flush();
  assert.equal(attempts.length, 5);
  assert.ok(attempts.every((id) => id === j.id), "every attempt carries the same id");
  assert.ok(waits.includes(1000) && waits.includes(2000), "Retry-After is honoured: " + waits);
  assert.equal(srv.stored.size, 1);
});

test("answers left unsent by a closed page are sent when the session is reopened, and not asked again", async () => {
  let down = true;
  const srv = fakeServer({ trials: 3, fail: (req) => (down && req.path.endsWith("/judgments") ? "network" : undefined) });
  const storage = memoryStore();
  const first = client(srv, storage, { sleep: () => new Promise((r) => setTimeout(r, 1)) });
  await first.open(worker);
  const q1 = await first.next();
  const j1 = first.answer(q1, "b", 5);
  const q2 = await first.next();
  const j2 = first.answer(q2, "c", 6);
  assert.equal(first.unsent, 2);
  assert.equal(srv.stored.size, 0);
  // The page is closed; the network comes back; a new page opens.
  down = false;
  const second = client(srv, storage);
  const s = await second.open(worker);
  assert.equal(s.id, "sess-1", "a returning worker gets the open session");
  assert.deepEqual([...srv.stored.keys()].sort(), [j1.id, j2.id].sort(), "the stored answers keep their ids");
  const q3 = await second.next();
  assert.ok(![q1.query_id, q2.query_id].includes(q3.query_id), "an answered query is not shown again");
  second.answer(q3, "a", 7);
  assert.equal(await second.next(), null);
  await second.finish();
  assert.equal(srv.stored.size, 3);
  // The first page, still retrying in the background, stores nothing twice.
  await first.flush();
  assert.equal(srv.stored.size, 3);
});

test("finish waits for every acknowledgment before it returns the completion", async () => {
  let hold;
  const gate = new Promise((r) => (hold = r));
  const srv = fakeServer({ trials: 1 });
  const inner = srv.fetch;
  srv.fetch = async (url, init) => {
    if (init.method === "POST" && url.endsWith("/judgments")) await gate;
    return inner(url, init);
  };
  const c = client(srv, memoryStore());
  await c.open(worker);
  c.answer(await c.next(), "a", 1);
  // Even a server that calls the session complete at once does not make
  // finish return before the answer is acknowledged.
  srv.trials = 0;
  assert.equal(await c.next(), null);
  let finished = false;
  const f = c.finish().then((x) => ((finished = true), x));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(finished, false, "finish returned before the answer was acknowledged");
  assert.equal(srv.stored.size, 0);
  hold();
  assert.equal((await f).code, "CC");
  assert.equal(srv.stored.size, 1);
});

test("answers the server refuses for good are dropped; a revoked key keeps them", async () => {
  const srv = fakeServer({ trials: 2 });
  const c = client(srv, memoryStore());
  await c.open(worker);
  const q = await c.next();
  srv.stored.set("other", { id: "other", query_id: q.query_id });
  c.answer(q, "a", 1);
  await c.flush();
  assert.equal(c.refused.length, 1);
  assert.equal(c.refused[0].error.status, 409);
  assert.equal(c.unsent, 0);

  const storage = memoryStore();
  const revoked = fakeServer({ trials: 2, fail: (req) => (req.path.endsWith("/judgments") ? json(401, { error: { code: "unauthorized", message: "invalid API key" } }) : undefined) });
  const d = client(revoked, storage);
  await d.open(worker);
  d.answer(await d.next(), "b", 1);
  await assert.rejects(d.flush(), (e) => e instanceof ApiError && e.status === 401);
  assert.equal(d.unsent, 1, "the answer is kept");
});

test("anchor answers name head, close and far", async () => {
  const srv = fakeServer({ trials: 1 });
  const c = client(srv, memoryStore());
  await c.open(worker);
  const q = await c.next();
  const j = c.answer(q, "c", 3, "anchor");
  assert.deepEqual({ head: j.head, close: j.close, far: j.far, items: j.items }, { head: "a", close: "c", far: "b", items: undefined });
  assert.throws(() => c.answer(q, "a", 3, "anchor"), /not a choice/);
  assert.throws(() => c.answer(q, "z", 3), /not a choice/);
});

test("retryable tells transient failures from final answers", () => {
  assert.equal(retryable(new TypeError("network")), true);
  for (const s of [408, 429, 500, 503]) assert.equal(retryable(new ApiError(s, "", "", 0)), true, String(s));
  for (const s of [400, 401, 403, 404, 409, 410, 422]) assert.equal(retryable(new ApiError(s, "", "", 0)), false, String(s));
});

test("image URLs resolve against the server", () => {
  const c = client(fakeServer(), memoryStore());
  assert.equal(c.imageURL("/v1/items/a/image?v=1"), "https://alignet.test/v1/items/a/image?v=1");
  assert.equal(c.imageURL("https://cdn.example/x.png"), "https://cdn.example/x.png");
});

test("the pictures in the display data of the queries held are preloaded", async () => {
  const loaded = [];
  const had = Object.hasOwn(globalThis, "Image");
  globalThis.Image = class {
    set src(v) {
      loaded.push(v);
    }
  };
  try {
    const srv = fakeServer({ trials: 2 });
    const c = client(srv, memoryStore());
    await c.open(worker);
    const q = await c.next();
    assert.deepEqual(q.display, [{ label: "A" }, {}, { label: "C", image: "/v1/items/c/image?v=1" }]);
    assert.ok(loaded.includes("https://alignet.test/v1/items/c/image?v=1"), "preloaded: " + loaded);
    assert.ok(loaded.every((u) => /^https:\/\/alignet\.test\/v1\/items\/c\/image\?v=\d+$/.test(u)), "only pictures are loaded: " + loaded);
  } finally {
    if (!had) delete globalThis.Image;
  }
});
