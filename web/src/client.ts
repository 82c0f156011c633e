// A small client for alignet's participant API: it opens a session, hands
// out the queries the server chose, and posts answers so that none is lost
// on a flaky connection or a reload: each answer is kept in storage before
// it is sent, sent again with the same judgment id until the server
// acknowledges it (202), and resent when a page using the same storage
// opens the session again. finish() resolves only once every answer was
// acknowledged, so redirecting to the platform afterwards loses nothing.

/** How an item is shown: a label, a picture, or both. */
export interface Display {
  label?: string;
  image?: string;
}

/**
 * One query: three items (for anchor studies, the head first) and how to
 * show each, in the same order (an item without display data is shown by
 * its id).
 */
export interface Query {
  query_id: string;
  items: string[];
  display?: Display[];
}

/** Where a participant goes when the session is complete. */
export interface Completion {
  code?: string;
  redirect?: string;
}

/** The participant, as the platform link names them. */
export interface Participant {
  platform: "prolific" | "mturk" | "generic";
  worker: string;
  params: Record<string, string>;
  /** MTurk preview (assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE): no session. */
  preview: boolean;
}

/** What GET /v1/studies/{study}/page returns. */
export interface PageInfo {
  study: string;
  task: "odd-one-out" | "anchor";
  title: string;
  consent: string;
  instructions: string;
}

/** An open session. */
export interface Session {
  id: string;
  trials: number;
  [k: string]: unknown;
}

/** A judgment as posted. */
export interface Judgment {
  id: string;
  worker: string;
  query_id?: string;
  rt_ms: number;
  items?: string[];
  odd?: string;
  head?: string;
  close?: string;
  far?: string;
}

/** The part of the Web Storage API the client uses. */
export interface KeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

/** Options of AlignetClient. */
export interface ClientOptions {
  /** Base URL of the alignet server, such as "https://alignet.lab.org". */
  server: string;
  /** A collect key bound to the study (it is public in the page). */
  key: string;
  /** The study id. */
  study: string;
  /** Where unsent answers are kept. Default: localStorage, else memory. */
  storage?: KeyValueStore;
  /** The fetch to use. Default: globalThis.fetch. */
  fetch?: typeof fetch;
  /** Queries held ahead of the one shown. Default 2. */
  prefetch?: number;
  /** Timeout of one request in milliseconds. Default 15000. */
  timeoutMs?: number;
  /** Waits between retries; tests shorten it. Default: exponential from 500 ms to 10 s. */
  backoff?: (attempt: number) => number;
  /** Sleep, replaceable in tests. */
  sleep?: (ms: number) => Promise<void>;
  /** Generates judgment ids. Default crypto.randomUUID. */
  newID?: () => string;
}

/** A non-2xx answer of the server. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly retryAfterMs: number,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

/** retryable reports whether a failed request may succeed later. */
export function retryable(err: unknown): boolean {
  if (!(err instanceof ApiError)) return true; // the network, a timeout
  return err.status === 408 || err.status === 429 || err.status >= 500;
}

const PREVIEW = "ASSIGNMENT_ID_NOT_AVAILABLE";

/** participantFromURL reads the platform parameters of a page's URL. */
export function participantFromURL(search: string, anonymous?: () => string): Participant {
  const q = new URLSearchParams(search);
  const g = (n: string) => q.get(n) ?? "";
  if (g("PROLIFIC_PID")) {
    return {
      platform: "prolific", worker: g("PROLIFIC_PID"), preview: false,
      params: { PROLIFIC_PID: g("PROLIFIC_PID"), STUDY_ID: g("STUDY_ID"), SESSION_ID: g("SESSION_ID") },
    };
  }
  if (g("assignmentId") || g("workerId")) {
    return {
      platform: "mturk", worker: g("workerId"), preview: g("assignmentId") === PREVIEW,
      params: { workerId: g("workerId"), assignmentId: g("assignmentId"), hitId: g("hitId"), turkSubmitTo: g("turkSubmitTo") },
    };
  }
  return { platform: "generic", worker: g("worker") || (anonymous ? anonymous() : ""), params: {}, preview: false };
}

function defaultBackoff(attempt: number): number {
  return Math.min(10000, 500 * 2 ** attempt) * (0.75 + Math.random() / 2);
}

function memoryStore(): KeyValueStore {
  const m = new Map<string, string>();
  return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => void m.set(k, v) };
}

function defaultStore(): KeyValueStore {
  try {
    const s = globalThis.localStorage;
    if (s) {
      s.setItem("alignet:probe", "1");
      return s;
    }
  } catch {
    // private mode or no DOM
  }
  return memoryStore();
}

function uuid(): string {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  const b = c.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => (x + 0x100).toString(16).slice(1)).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** AlignetClient runs one participant's session against an alignet server. */
export class AlignetClient {
  readonly server: string;
  readonly study: string;
  private readonly key: string;
  private readonly store: KeyValueStore;
  private readonly fetchFn: typeof fetch;
  private readonly prefetch: number;
  private readonly timeoutMs: number;
  private readonly backoff: (attempt: number) => number;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly newID: () => string;

  private participant: Participant | null = null;
  private session: Session | null = null;
  private pending: Judgment[] = [];
  private answered: string[] = [];
  private buffer: Query[] = [];
  private filling: Promise<void> | null = null;
  private sending: Promise<void> | null = null;
  private fatal: ApiError | null = null;
  /** The completion once the server said the session is complete. */
  completion: Completion | null = null;
  /** The server's progress object of the last next answer. */
  progress: Record<string, unknown> | null = null;
  /** Answers the server refused for good (409, 410, 422): they were dropped. */
  readonly refused: { judgment: Judgment; error: ApiError }[] = [];

  constructor(opts: ClientOptions) {
    if (!opts.server || !opts.key || !opts.study) throw new Error("alignet: server, key and study are required");
    this.server = opts.server.replace(/\/+$/, "");
    this.key = opts.key;
    this.study = opts.study;
    this.store = opts.storage ?? defaultStore();
    const f = opts.fetch ?? globalThis.fetch;
    this.fetchFn = (input, init) => f(input, init);
    this.prefetch = opts.prefetch ?? 2;
    this.timeoutMs = opts.timeoutMs ?? 15000;
    this.backoff = opts.backoff ?? defaultBackoff;
    this.sleep = opts.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
    this.newID = opts.newID ?? uuid;
  }

  /** The participant of the session opened, or null. */
  get who(): Participant | null {
    return this.participant;
  }

  /** The open session, or null. */
  get current(): Session | null {
    return this.session;
  }

  /** Number of answers given in this session (on this device). */
  get answeredCount(): number {
    return this.answered.length;
  }

  /** Number of answers not yet acknowledged. */
  get unsent(): number {
    return this.pending.length;
  }

  /** True once the server reported the session complete. */
  get complete(): boolean {
    return this.completion !== null;
  }

  /** imageURL resolves a display image URL against the server. */
  imageURL(src: string): string {
    return new URL(src, this.server + "/").href;
  }

  private studyPath(): string {
    return `/v1/studies/${encodeURIComponent(this.study)}`;
  }

  private storeKey(name: string): string {
    const p = this.participant;
    return `alignet:v1:${this.study}:${p ? p.platform + ":" + p.worker : "-"}:${name}`;
  }

  private load<T>(name: string, def: T): T {
    try {
      const v = this.store.getItem(this.storeKey(name));
      return v === null ? def : (JSON.parse(v) as T);
    } catch {
      return def;
    }
  }

  private save(name: string, v: unknown): void {
    try {
      this.store.setItem(this.storeKey(name), JSON.stringify(v));
    } catch {
      // full or unavailable: memory only
    }
  }

  /** call sends one request and returns the decoded body. */
  async call<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), this.timeoutMs);
    const headers: Record<string, string> = { Authorization: "Bearer " + this.key };
    const init: RequestInit = { method, headers, signal: ctl.signal, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    try {
      const resp = await this.fetchFn(this.server + path, init);
      const text = await resp.text();
      let data: any = null;
      try {
        data = text ? JSON.parse(text) : null;
      } catch {
        // not JSON
      }
      if (!resp.ok) {
        const e = (data && data.error) || {};
        const ra = Number(resp.headers.get("Retry-After")) || 0;
        throw new ApiError(resp.status, e.code || "", e.message || `HTTP ${resp.status}`, ra * 1000);
      }
      return { status: resp.status, body: data as T };
    } finally {
      clearTimeout(timer);
    }
  }

  /** callRetry retries transient failures (network, 408, 429, 5xx) forever. */
  async callRetry<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.call<T>(method, path, body);
      } catch (err) {
        if (!retryable(err)) throw err;
        const ra = err instanceof ApiError ? err.retryAfterMs : 0;
        await this.sleep(ra || this.backoff(attempt));
      }
    }
  }

  /** page returns the study's task and the texts of its page settings. */
  async page(): Promise<PageInfo> {
    return (await this.callRetry<PageInfo>("GET", this.studyPath() + "/page")).body;
  }

  /**
   * open opens (or, for a returning participant, reopens) the session and
   * sends the answers a previous page left unsent before anything else.
   */
  async open(p: Participant): Promise<Session> {
    if (p.preview) throw new Error("alignet: an MTurk preview has no session; accept the HIT first");
    if (!p.worker) throw new Error("alignet: the participant has no worker id");
    this.participant = p;
    this.pending = this.load<Judgment[]>("pending", []);
    this.answered = this.load<string[]>("answered", []);
    const r = await this.callRetry<Session>("POST", this.studyPath() + "/sessions", {
      worker: p.worker, platform: p.platform, params: p.params,
    });
    this.session = r.body;
    await this.flush();
    return this.session;
  }

  private skip(id: string): boolean {
    return this.answered.includes(id);
  }

  private fill(): Promise<void> {
    if (this.filling) return this.filling;
    if (this.completion || this.buffer.length >= this.prefetch) return Promise.resolve();
    const s = this.session;
    if (!s) return Promise.reject(new Error("alignet: open a session first"));
    const path = `${this.studyPath()}/sessions/${encodeURIComponent(s.id)}/next?n=${this.prefetch}`;
    this.filling = this.callRetry<any>("GET", path)
      .then((r) => {
        const b = r.body || {};
        if (b.progress) this.progress = b.progress;
        if (b.complete) {
          this.completion = b.completion || {};
          return;
        }
        for (const q of (b.queries || []) as Query[]) {
          if (this.skip(q.query_id) || this.buffer.some((x) => x.query_id === q.query_id)) continue;
          this.buffer.push(q);
          this.preload(q);
        }
      })
      .finally(() => {
        this.filling = null;
      });
    return this.filling;
  }

  private preload(q: Query): void {
    if (typeof Image === "undefined") return;
    for (const d of q.display ?? []) {
      if (d?.image) new Image().src = this.imageURL(d.image);
    }
  }

  /** next resolves with the next query to show, or null once the session is complete. */
  async next(): Promise<Query | null> {
    for (let empty = 0; ; ) {
      while (this.buffer.length > 0) {
        const q = this.buffer.shift()!;
        if (!this.skip(q.query_id)) {
          void this.fill().catch(() => {});
          return q;
        }
      }
      if (this.completion) return null;
      const before = this.buffer.length;
      await this.fill();
      if (!this.completion && this.buffer.length === before) await this.sleep(this.backoff(Math.min(empty++, 3)));
    }
  }

  /**
   * answer records the participant's choice on q and sends it in the
   * background; it is kept in storage until the server acknowledged it.
   * For odd-one-out, choice is the odd item; for anchor queries (head
   * first), the item chosen as closer to the head.
   */
  answer(q: Query, choice: string, rtMs: number, task: "odd-one-out" | "anchor" = "odd-one-out"): Judgment {
    const p = this.participant;
    if (!p) throw new Error("alignet: open a session first");
    if (!q.items.includes(choice) || (task === "anchor" && choice === q.items[0])) {
      throw new Error(`alignet: ${choice} is not a choice of query ${q.query_id}`);
    }
    const j: Judgment = { id: this.newID(), worker: p.worker, query_id: q.query_id, rt_ms: Math.max(0, Math.round(rtMs)) };
    if (task === "anchor") {
      j.head = q.items[0];
      j.close = choice;
      j.far = q.items[1] === choice ? q.items[2] : q.items[1];
    } else {
      j.items = q.items.slice();
      j.odd = choice;
    }
    this.answered.push(q.query_id);
    this.save("answered", this.answered);
    this.pending.push(j);
    this.save("pending", this.pending);
    void this.flush().catch(() => {});
    return j;
  }

  /** flush resolves once every answer was acknowledged (or refused for good). */
  flush(): Promise<void> {
    if (this.fatal) return Promise.reject(this.fatal);
    if (!this.sending) {
      this.sending = this.sendAll().finally(() => {
        this.sending = null;
      });
    }
    return this.sending.then(() => (this.pending.length > 0 ? this.flush() : undefined));
  }

  private async sendAll(): Promise<void> {
    for (let attempt = 0; this.pending.length > 0; ) {
      const j = this.pending[0];
      try {
        await this.call("POST", this.studyPath() + "/judgments", j);
      } catch (err) {
        if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
          this.fatal = err; // the key was revoked: keep the answers
          throw err;
        }
        if (retryable(err)) {
          const ra = err instanceof ApiError ? err.retryAfterMs : 0;
          await this.sleep(ra || this.backoff(attempt++));
          continue;
        }
        this.refused.push({ judgment: j, error: err as ApiError });
      }
      attempt = 0;
      this.pending.shift();
      this.save("pending", this.pending);
    }
  }

  /**
   * finish waits until every answer was acknowledged and returns the
   * completion; call it once next() returned null, then redirect to
   * completion.redirect.
   */
  async finish(): Promise<Completion> {
    await this.flush();
    if (!this.completion) throw new Error("alignet: the session is not complete yet");
    return this.completion;
  }
}
