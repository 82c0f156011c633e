// alignet's built-in participant page: consent, instructions, then one
// session of odd-one-out (or anchor) trials, then the completion redirect.
//
// Answers are never lost: each is written to localStorage before it is
// sent, sent again with the same judgment id until the server acknowledges
// it (202), and resent after a reload. The page redirects only once every
// answer is acknowledged. Plain ES2017, no build step.
(function () {
  'use strict';

  var PREFETCH = 2; // queries held ahead of the one shown
  var REQUEST_TIMEOUT_MS = 15000;
  var PREVIEW = 'ASSIGNMENT_ID_NOT_AVAILABLE';

  var app = document.getElementById('app');
  var net = document.getElementById('net');
  var query = new URLSearchParams(location.search);
  var parts = location.pathname.split('/').filter(Boolean);
  var study = decodeURIComponent(parts[parts.length - 1] || '');
  var key = query.get('k') || '';
  var base = location.origin;

  // ---- small helpers ----

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function show() {
    app.textContent = '';
    for (var i = 0; i < arguments.length; i++) app.appendChild(arguments[i]);
  }

  function status(text) { show(el('p', 'status', text)); }

  // paragraphs renders plain text, a blank line starting a paragraph.
  function paragraphs(text) {
    var box = el('div', 'text');
    String(text).split(/\r?\n\s*\r?\n/).forEach(function (p) {
      if (p.trim()) box.appendChild(el('p', '', p.trim()));
    });
    return box;
  }

  function button(text, onClick) {
    var b = el('button', 'primary', text);
    b.type = 'button';
    b.addEventListener('click', onClick);
    return b;
  }

  function waitClick(text) {
    return new Promise(function (resolve) {
      var b = button(text, function () { b.disabled = true; resolve(); });
      var row = el('div', 'actions');
      row.appendChild(b);
      app.appendChild(row);
      b.focus();
    });
  }

  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) { return (x + 0x100).toString(16).slice(1); }).join('');
    return h.slice(0, 8) + '-' + h.slice(8, 12) + '-' + h.slice(12, 16) + '-' + h.slice(16, 20) + '-' + h.slice(20);
  }

  function backoff(attempt) {
    return Math.min(10000, 500 * Math.pow(2, attempt)) * (0.75 + Math.random() / 2);
  }

  function online(ok) {
    net.hidden = ok;
    if (!ok) net.textContent = 'Connection lost: your answers are kept and will be sent when it is back.';
  }

  // ---- storage: what must survive a reload ----

  function store(name) {
    var k = 'alignet:v1:' + study + ':' + name;
    return {
      get: function (def) {
        try { var v = localStorage.getItem(k); return v === null ? def : JSON.parse(v); } catch (e) { return def; }
      },
      set: function (v) {
        try { localStorage.setItem(k, JSON.stringify(v)); } catch (e) { /* private mode: memory only */ }
      }
    };
  }

  // ---- the API ----

  // ApiError is a non-2xx answer, with the body's error fields.
  function ApiError(status, body, retryAfter) {
    var e = (body && body.error) || {};
    this.status = status;
    this.code = e.code || '';
    this.message = e.message || ('HTTP ' + status);
    this.retryAfter = retryAfter;
  }

  function retryable(err) {
    return !(err instanceof ApiError) || err.status === 408 || err.status === 429 || err.status >= 500;
  }

  function call(method, path, body) {
    var ctl = new AbortController();
    var timer = setTimeout(function () { ctl.abort(); }, REQUEST_TIMEOUT_MS);
    var init = { method: method, headers: { Authorization: 'Bearer ' + key }, signal: ctl.signal, cache: 'no-store' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    return fetch(base + path, init).then(function (resp) {
      return resp.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { /* not JSON */ }
        if (!resp.ok) throw new ApiError(resp.status, data, Number(resp.headers.get('Retry-After')) || 0);
        online(true);
        return { status: resp.status, body: data };
      });
    }, function (err) {
      online(false);
      throw err;
    }).finally(function () { clearTimeout(timer); });
  }

  // callRetry retries transient failures (network, 408, 429, 5xx) forever
  // with backoff; other answers are returned or thrown at once.
  function callRetry(method, path, body) {
    var attempt = 0;
    function go() {
      return call(method, path, body).catch(function (err) {
        if (!retryable(err)) throw err;
        var wait = err.retryAfter ? err.retryAfter * 1000 : backoff(attempt++);
        return sleep(wait).then(go);
      });
    }
    return go();
  }

  var studyPath = '/v1/studies/' + encodeURIComponent(study);

  // ---- the outbox: answers waiting for their 202 ----

  function Outbox(storage) {
    this.storage = storage;
    this.pending = storage.get([]);
    this.sending = false;
    this.waiters = [];
    this.fatal = null;
  }

  Outbox.prototype.add = function (j) {
    this.pending.push(j);
    this.storage.set(this.pending);
    this.kick();
  };

  Outbox.prototype.kick = function () {
    if (this.sending || this.fatal) return;
    this.sending = true;
    var self = this;
    this.loop().finally(function () {
      self.sending = false;
      if (self.pending.length === 0) self.waiters.splice(0).forEach(function (w) { w.resolve(); });
      else if (self.fatal) self.waiters.splice(0).forEach(function (w) { w.reject(self.fatal); });
    });
  };

  Outbox.prototype.loop = async function () {
    var attempt = 0;
    while (this.pending.length > 0) {
      var j = this.pending[0];
      try {
        await call('POST', studyPath + '/judgments', j);
      } catch (err) {
        if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
          this.fatal = err; // the key was revoked: keep the answers, stop
          return;
        }
        if (retryable(err)) {
          await sleep(err.retryAfter ? err.retryAfter * 1000 : backoff(attempt++));
          continue;
        }
        // 409 (the query was answered already), 410 (expired), 422: the
        // server will never take this answer; drop it.
        console.warn('alignet: answer ' + j.id + ' refused: ' + err.status + ' ' + err.message);
      }
      attempt = 0;
      this.pending.shift();
      this.storage.set(this.pending);
    }
  };

  // drained resolves once every answer is acknowledged.
  Outbox.prototype.drained = function () {
    var self = this;
    if (this.pending.length === 0 && !this.sending) return Promise.resolve();
    return new Promise(function (resolve, reject) {
      self.waiters.push({ resolve: resolve, reject: reject });
      self.kick();
    });
  };

  // ---- platform parameters ----

  function participant() {
    var g = function (n) { return query.get(n) || ''; };
    if (g('PROLIFIC_PID')) {
      return { platform: 'prolific', worker: g('PROLIFIC_PID'),
        params: { PROLIFIC_PID: g('PROLIFIC_PID'), STUDY_ID: g('STUDY_ID'), SESSION_ID: g('SESSION_ID') } };
    }
    if (g('assignmentId') || g('workerId')) {
      return { platform: 'mturk', worker: g('workerId'), preview: g('assignmentId') === PREVIEW,
        params: { workerId: g('workerId'), assignmentId: g('assignmentId'), hitId: g('hitId'), turkSubmitTo: g('turkSubmitTo') } };
    }
    var w = g('worker');
    if (!w) {
      var anon = store('anonymous-worker');
      w = anon.get('') || 'anon-' + uuid();
      anon.set(w);
    }
    return { platform: 'generic', worker: w, params: {} };
  }

  // ---- trials ----

  function imageURL(src) {
    try { return new URL(src, base).href; } catch (e) { return ''; }
  }

  // displayOf returns the display data of q's item i (the API sends them
  // in the order of the items).
  function displayOf(q, i) {
    return (q.display && q.display[i]) || {};
  }

  function stimulus(item, d, clickable) {
    var box = el(clickable ? 'button' : 'div', 'stim' + (clickable ? '' : ' static'));
    box.dataset.item = item;
    if (clickable) box.type = 'button';
    if (d.image) {
      var img = el('img');
      img.alt = d.label || item;
      img.src = imageURL(d.image);
      img.draggable = false;
      box.appendChild(img);
    }
    if (d.label || !d.image) box.appendChild(el('span', 'label', d.label || item));
    return box;
  }

  function prefetchImages(q) {
    q.items.forEach(function (_, i) {
      var d = displayOf(q, i);
      if (d.image) new Image().src = imageURL(d.image);
    });
  }

  // imagesReady resolves when the images in box have loaded or failed,
  // or after 10 s.
  function imagesReady(box) {
    var imgs = Array.prototype.slice.call(box.querySelectorAll('img'));
    return Promise.race([
      Promise.all(imgs.map(function (img) {
        return img.complete ? null : new Promise(function (r) { img.onload = img.onerror = r; });
      })),
      sleep(10000)
    ]);
  }

  // trial shows one query and resolves with the chosen item and the
  // response time in milliseconds, measured from when the stimuli were
  // shown.
  async function trial(q, task, prompt) {
    var buttons = [];
    var nodes = [];
    if (task === 'anchor') {
      nodes.push(el('p', 'prompt', prompt || 'Which of the two below is more similar to this one?'));
      var head = el('div', 'head');
      head.appendChild(stimulus(q.items[0], displayOf(q, 0), false));
      nodes.push(head);
      var row = el('div', 'stimuli choices');
      q.items.slice(1).forEach(function (it, i) { var b = stimulus(it, displayOf(q, i + 1), true); buttons.push(b); row.appendChild(b); });
      nodes.push(row);
    } else {
      nodes.push(el('p', 'prompt', prompt || 'Which one is the odd one out?'));
      var grid = el('div', 'stimuli');
      q.items.forEach(function (it, i) { var b = stimulus(it, displayOf(q, i), true); buttons.push(b); grid.appendChild(b); });
      nodes.push(grid);
    }
    buttons.forEach(function (b) { b.disabled = true; });
    show.apply(null, nodes);
    app.dataset.query = q.query_id; // tells trials apart (tests wait on it)
    document.body.dataset.state = 'trial';
    await imagesReady(app);
    var t0 = performance.now();
    buttons.forEach(function (b) { b.disabled = false; });
    return new Promise(function (resolve) {
      function pick(b) {
        var rt = Math.round(performance.now() - t0);
        document.removeEventListener('keydown', onKey);
        buttons.forEach(function (x) { x.disabled = true; });
        b.classList.add('chosen');
        resolve({ item: b.dataset.item, rt: rt });
      }
      function onKey(ev) {
        var i = Number(ev.key) - 1;
        if (i >= 0 && i < buttons.length) pick(buttons[i]);
      }
      buttons.forEach(function (b) { b.addEventListener('click', function () { pick(b); }); });
      document.addEventListener('keydown', onKey);
    });
  }

  function judgment(task, worker, q, choice) {
    var j = { id: uuid(), worker: worker, rt_ms: choice.rt, query_id: q.query_id };
    if (task === 'anchor') {
      j.head = q.items[0];
      j.close = choice.item;
      j.far = q.items[1] === choice.item ? q.items[2] : q.items[1];
    } else {
      j.items = q.items.slice();
      j.odd = choice.item;
    }
    return j;
  }

  // ---- the queue of next queries ----

  function Queue(session, skip) {
    this.path = studyPath + '/sessions/' + encodeURIComponent(session) + '/next?n=' + PREFETCH;
    this.buf = [];
    this.skip = skip;
    this.done = null; // the completion once the session is complete
    this.progress = null;
    this.inflight = null;
  }

  Queue.prototype.fill = function () {
    if (this.inflight || this.done || this.buf.length >= PREFETCH) return this.inflight;
    var self = this;
    this.inflight = callRetry('GET', this.path).then(function (r) {
      var b = r.body || {};
      if (b.progress) self.progress = b.progress;
      if (b.complete) { self.done = b.completion || {}; return; }
      (b.queries || []).forEach(function (q) {
        var dup = self.skip(q.query_id) || self.buf.some(function (x) { return x.query_id === q.query_id; });
        if (!dup) { self.buf.push(q); prefetchImages(q); }
      });
    }).finally(function () { self.inflight = null; });
    return this.inflight;
  };

  // next resolves with the next query, or null once the session is complete.
  Queue.prototype.next = async function () {
    for (var empty = 0; ; ) {
      while (this.buf.length > 0) {
        var q = this.buf.shift();
        if (!this.skip(q.query_id)) { this.fill(); return q; }
      }
      if (this.done) return null;
      var before = this.buf.length;
      await this.fill();
      if (!this.done && this.buf.length === before) await sleep(backoff(Math.min(empty++, 3)));
    }
  };

  // ---- the session ----

  function setProgress(done, total) {
    if (!total) return;
    document.getElementById('progress').hidden = false;
    document.getElementById('progress-bar').style.width = Math.min(100, 100 * done / total) + '%';
    document.getElementById('progress-text').textContent = Math.min(done, total) + ' / ' + total;
  }

  function fail(err) {
    var box = el('div', 'error');
    box.appendChild(el('p', '', err && err.status === 401
      ? 'This study link is not valid (its key was not accepted). Please contact the researchers.'
      : 'Something went wrong: ' + ((err && err.message) || err)));
    show(box);
  }

  async function finish(outbox, completion) {
    status('Saving your answers…');
    await outbox.drained();
    document.body.dataset.state = 'complete';
    if (completion.redirect) {
      status('Thank you! Taking you back…');
      location.replace(completion.redirect);
      return;
    }
    var nodes = [el('p', 'status', 'Thank you, you are done.')];
    if (completion.code) {
      nodes.push(el('p', 'status', 'Your completion code:'));
      nodes.push(el('p', 'code', completion.code));
    }
    show.apply(null, nodes);
  }

  async function main() {
    if (!key) throw new Error('this link has no key (k=...); ask the researchers for the full link');
    var who = participant();
    var page = (await callRetry('GET', studyPath + '/page')).body;
    var title = page.title || 'Study';
    document.title = title;
    document.getElementById('title').textContent = title;

    if (who.preview) {
      show(paragraphs(page.instructions || 'Choose the odd one out of three pictures or words, many times in a row.'),
        el('p', 'status', 'Preview: accept the HIT to begin.'));
      return;
    }
    if (!who.worker) throw new Error('this link has no participant id');
    var scope = who.platform + ':' + who.worker;
    var consent = store(scope + ':consent');
    if (page.consent && !consent.get(false)) {
      show(paragraphs(page.consent));
      await waitClick('I agree');
      consent.set(true);
    }
    var answered = store(scope + ':answered');
    var done = answered.get([]);
    if (done.length === 0) {
      show(paragraphs(page.instructions || (page.task === 'anchor'
        ? 'On each screen, pick which of the two lower items is more similar to the one on top.'
        : 'On each screen you see three items. Pick the one that fits least with the other two: the odd one out.')));
      await waitClick('Start');
    }
    status('Starting…');
    var sess = await callRetry('POST', studyPath + '/sessions',
      { worker: who.worker, platform: who.platform, params: who.params });
    var s = sess.body;
    var outbox = new Outbox(store(scope + ':pending'));
    var seen = {};
    done.forEach(function (id) { seen[id] = true; });
    // Answers from before a reload reach the server before it is asked
    // for more, so it does not hand out what was answered.
    status('Loading…');
    await outbox.drained();
    var queue = new Queue(s.id, function (id) { return !!seen[id]; });
    var total = s.trials || 0;
    for (;;) {
      setProgress(queue.progress && typeof queue.progress.answered === 'number' ? queue.progress.answered : done.length, total);
      var q = await queue.next();
      if (q === null) break;
      var choice = await trial(q, page.task);
      seen[q.query_id] = true;
      done.push(q.query_id);
      answered.set(done);
      outbox.add(judgment(page.task, who.worker, q, choice));
      setProgress(done.length, total);
    }
    await finish(outbox, queue.done);
  }

  window.addEventListener('online', function () { online(true); });
  main().catch(function (err) { console.error(err); fail(err); });
})();
