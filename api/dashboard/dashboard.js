// The alignet dashboard: draws a study's collection, teacher, drift,
// students and roles from the JSON API with uPlot. The read key comes from
// the URL fragment (#k=KEY) or the form and stays in sessionStorage.
(function () {
  "use strict";
  var KEY = "alignet.dashboard.key";
  var REFRESH_MS = 30000;
  var $ = function (id) { return document.getElementById(id); };
  var plots = [];

  function takeKeyFromFragment() {
    var m = /(?:^#|&)k=([^&]+)/.exec(location.hash);
    if (m) {
      sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  function showLogin(msg) {
    $("login").hidden = false;
    $("list").hidden = true;
    $("study").hidden = true;
    $("login-error").textContent = msg || "";
  }

  function api(path) {
    var key = sessionStorage.getItem(KEY);
    return fetch(path, { headers: { Authorization: "Bearer " + key }, referrerPolicy: "no-referrer", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401 || r.status === 403) {
          var e = new Error("the key was refused (" + r.status + "): give a key with the read scope");
          e.auth = true;
          throw e;
        }
        return r.json().then(function (b) {
          if (!r.ok) { throw new Error(path + ": " + ((b.error && b.error.message) || r.status)); }
          return b;
        });
      });
  }

  function fmt(v, d) {
    if (v === null || v === undefined || Number.isNaN(v)) { return "–"; }
    return typeof v === "number" ? v.toFixed(d === undefined ? 3 : d) : String(v);
  }
  function secs(t) { return Date.parse(t) / 1000; }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined) { e.textContent = text; }
    if (cls) { e.className = cls; }
    return e;
  }
  function row(tbody, cells, cls) {
    var tr = el("tr", undefined, cls);
    cells.forEach(function (c) { tr.appendChild(el("td", c)); });
    tbody.appendChild(tr);
  }
  function signal(snap, name, student) {
    if (!snap) { return null; }
    for (var i = 0; i < snap.signals.length; i++) {
      var s = snap.signals[i];
      if (s.name === name && (s.student || "") === (student || "")) { return s; }
    }
    return null;
  }
  function val(s) { return s && s.value !== null && s.value !== undefined ? s.value : null; }

  // chart draws data (uPlot's [xs, ys...]) in the container, or says there
  // is no data; it records on the container how many points it plotted
  // (data-points) and that it drew (data-drawn), counting only the series
  // whose index is in counted (default all).
  function chart(id, series, data, opts, counted) {
    var box = $(id);
    box.innerHTML = "";
    var points = 0;
    for (var s = 1; s < data.length; s++) {
      if (counted && counted.indexOf(s) < 0) { continue; }
      data[s].forEach(function (v) { if (v !== null && v !== undefined) { points++; } });
    }
    box.dataset.points = String(points);
    box.dataset.drawn = "0";
    if (points === 0 || data[0].length === 0) {
      box.appendChild(el("div", "no data yet", "empty"));
      box.dataset.drawn = "empty";
      return;
    }
    var o = Object.assign({
      width: Math.max(320, box.clientWidth || 540), height: 240,
      series: [{}].concat(series),
      hooks: { draw: [function () { box.dataset.drawn = "1"; }] },
    }, opts || {});
    plots.push(new uPlot(o, data, box));
  }

  var colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"];
  function line(label, i, extra) {
    return Object.assign({ label: label, stroke: colors[i % colors.length], width: 2, spanGaps: true, points: { show: true, size: 4 } }, extra || {});
  }
  function dots(label, color, size) {
    return { label: label, stroke: color, fill: color, paths: function () { return null; }, points: { show: true, size: size || 9, fill: color } };
  }

  // merge aligns series given as [[x, y]...] lists on the union of their xs.
  function merge(lists) {
    var xs = [];
    var seen = {};
    lists.forEach(function (l) { l.forEach(function (p) { if (!seen[p[0]]) { seen[p[0]] = true; xs.push(p[0]); } }); });
    xs.sort(function (a, b) { return a - b; });
    var idx = {};
    xs.forEach(function (x, i) { idx[x] = i; });
    var out = [xs];
    lists.forEach(function (l) {
      var ys = xs.map(function () { return null; });
      l.forEach(function (p) { ys[idx[p[0]]] = p[1]; });
      out.push(ys);
    });
    return out;
  }

  function card(label, value, alarm) {
    var c = el("div", undefined, "card" + (alarm ? " alarm" : ""));
    c.appendChild(el("b", value));
    c.appendChild(el("span", label));
    $("cards").appendChild(c);
  }

  function renderStudy(study, info, drift, versions, students, ready) {
    plots.forEach(function (p) { p.destroy(); });
    plots = [];
    var cur = drift.current;
    var hist = drift.history || [];
    $("title").textContent = study + " · " + info.task + " · " + info.space;
    $("updated").textContent = cur ? "drift as of " + new Date(cur.taken_at).toLocaleTimeString() : "no drift snapshot yet";
    $("cards").innerHTML = "";
    var pm = cur ? cur.per_minute : [];
    var last5 = pm.slice(-6, -1).reduce(function (a, m) { return a + m.count; }, 0) / 5;
    card("judgments", fmt(info.judgments, 0));
    card("judgments / min (last 5)", fmt(last5, 1));
    card("teacher", cur ? cur.teacher_status + " v" + cur.teacher_version : "–");
    card("judgments seen by learner", cur ? fmt(cur.judgments_seen, 0) : "–");
    var q = cur ? cur.quality : null;
    card("workers (flagged)", q ? q.workers + " (" + q.flagged + ")" : "–");
    card("attention failures", q ? fmt(q.attention_failure_rate) : "–");
    card("change points now", cur ? String(cur.changes.length) : "–", cur && cur.changes.length > 0);

    // Collection: judgments per minute.
    chart("chart-rate", [{ label: "judgments", stroke: colors[0], fill: colors[0] + "88", paths: uPlot.paths.bars({ size: [0.8] }), points: { show: false } }],
      [pm.map(function (m) { return secs(m.minute); }), pm.map(function (m) { return m.count > 0 ? m.count : null; })]);

    // Query mix.
    var kinds = cur ? Object.keys(cur.query_mix).sort() : [];
    chart("chart-mix", [{ label: "judgments", stroke: colors[2], fill: colors[2] + "88", paths: uPlot.paths.bars({ size: [0.6] }), points: { show: false } }],
      [kinds.map(function (_, i) { return i; }), kinds.map(function (k) { return cur.query_mix[k]; })],
      { scales: { x: { time: false, range: [-0.5, Math.max(kinds.length - 0.5, 0.5)] } },
        axes: [{ splits: function () { return kinds.map(function (_, i) { return i; }); }, values: function (u, vs) { return vs.map(function (v) { return kinds[v] || ""; }); } }, { size: 64 }] });

    // Learning curve: held-out accuracy of each version and prequential
    // accuracy of the snapshots, against judgments seen.
    var held = [], raw = [], preq = [];
    versions.forEach(function (v) {
      if (v.eval && v.eval.teacher && v.eval.teacher.n > 0) {
        held.push([v.judgments_seen, v.eval.teacher.accuracy]);
        raw.push([v.judgments_seen, v.eval.raw.accuracy]);
      }
    });
    hist.forEach(function (h) { var p = val(signal(h, "prequential_accuracy")); if (p !== null && h.judgments_seen > 0) { preq.push([h.judgments_seen, p]); } });
    chart("chart-learning", [line("held-out (versions)", 0), line("raw embeddings", 7, { dash: [4, 4] }), line("prequential", 1, { points: { show: false } })],
      merge([held, raw, preq]), { scales: { x: { time: false } } });

    // Reliability diagram.
    var bins = (cur && cur.reliability || []).filter(function (b) { return b.count > 0 && b.predicted !== null; });
    bins.sort(function (a, b) { return a.predicted - b.predicted; });
    var rx = bins.map(function (b) { return b.predicted; });
    chart("chart-reliability", [line("observed frequency", 0), { label: "calibrated", stroke: "#999", dash: [5, 5], points: { show: false } }],
      [rx, bins.map(function (b) { return b.observed; }), rx],
      { scales: { x: { time: false, range: [0, 1] }, y: { range: [0, 1] } } }, [1]);

    // Drift over time, change points marked.
    var tx = hist.map(function (h) { return secs(h.taken_at); });
    var acc = hist.map(function (h) { return val(signal(h, "teacher_accuracy")); });
    var ref = hist.map(function (h) { var s = signal(h, "teacher_accuracy"); return s ? s.reference : null; });
    var pq = hist.map(function (h) { return val(signal(h, "prequential_accuracy")); });
    var cp = hist.map(function (h, i) { return h.changes.length > 0 ? (acc[i] !== null ? acc[i] : (pq[i] !== null ? pq[i] : ref[i])) : null; });
    chart("chart-drift", [line("teacher, recent held-out", 0, { points: { show: false } }), line("reference (version)", 7, { dash: [6, 4], points: { show: false } }),
      line("prequential", 1, { points: { show: false } }), dots("change point", "#d62728")],
      [tx, acc, ref, pq, cp], {}, [1, 2, 3]);

    // Student alignment: held-out accuracy and teacher agreement of each
    // version, and the fresh accuracy of the current one over time.
    var lists = [], ss = [];
    students.forEach(function (st, i) {
      var a = [], g = [], f = [];
      (st.versions || []).forEach(function (v) {
        if (v.metrics && v.metrics.held_out && v.metrics.held_out.n > 0) {
          a.push([secs(v.created_at), v.metrics.held_out.accuracy]);
          g.push([secs(v.created_at), v.metrics.held_out_teacher_agreement]);
        }
      });
      hist.forEach(function (h) { var s = val(signal(h, "student_accuracy", st.id)); if (s !== null) { f.push([secs(h.taken_at), s]); } });
      lists.push(a, g, f);
      ss.push(line(st.id + " held-out (versions)", 3 * i), line(st.id + " teacher agreement", 3 * i + 1), line(st.id + " fresh accuracy", 3 * i + 2, { points: { show: false } }));
    });
    chart("chart-students", ss, lists.length ? merge(lists) : [[]]);

    // Response times.
    chart("chart-rt", [line("p10", 2, { points: { show: false } }), line("p50", 0, { points: { show: false } }), line("p90", 1, { points: { show: false } })],
      [tx, hist.map(function (h) { return h.quality.rt_ms ? h.quality.rt_ms.p10 : null; }),
        hist.map(function (h) { return h.quality.rt_ms ? h.quality.rt_ms.p50 : null; }),
        hist.map(function (h) { return h.quality.rt_ms ? h.quality.rt_ms.p90 : null; })]);

    // Signals.
    var tb = $("signals").tBodies[0];
    tb.innerHTML = "";
    (cur ? cur.signals : []).forEach(function (s) {
      row(tb, [s.name + (s.student ? " (" + s.student + ")" : ""), fmt(s.value), fmt(s.reference), s.n + " / " + s.ref_n, fmt(s.z, 2),
        s.cusum !== undefined && s.cusum !== null ? fmt(s.cusum, 2) + " / " + fmt(s.threshold, 2) : "–",
        s.change ? "CHANGE" : (s.enough ? "no" : "too few")], s.change ? "alarm" : "");
    });

    // Roles.
    var rb = $("roles").tBodies[0];
    rb.innerHTML = "";
    var r = cur ? cur.roles : {};
    row(rb, ["learner", "staleness " + fmt(r.learner_staleness_seconds, 1) + " s, lag " + fmt(r.learner_lag_seconds, 1) + " s"]);
    row(rb, ["persister", "median lag " + fmt(r.persister_lag_seconds, 2) + " s, newest stored " + (r.newest_stored_at ? new Date(r.newest_stored_at).toLocaleTimeString() : "–")]);
    row(rb, ["trainer", "dataset " + (r.trainer_dataset_at ? new Date(r.trainer_dataset_at).toLocaleString() : "none") +
      ", student " + (r.trainer_student_at ? new Date(r.trainer_student_at).toLocaleString() : "none")]);
    row(rb, ["monitor", cur ? "snapshot " + Math.round(Date.now() / 1000 - secs(cur.taken_at)) + " s ago" : "no snapshot"]);
    Object.keys((ready && ready.checks) || {}).sort().forEach(function (k) { row(rb, ["ready: " + k, ready.checks[k]], ready.checks[k] === "ok" ? "" : "alarm"); });

    // Workers.
    var wb = $("workers").tBodies[0];
    wb.innerHTML = "";
    $("workers-summary").textContent = q ? q.tested_workers + " workers tested, pooled agreement " + fmt(q.pooled_agreement) +
      ", " + q.low_agreement + " far below the others (binomial test, Bonferroni α = 0.01)" : "";
    (q && q.workers_list || []).slice(0, 25).forEach(function (w) {
      var flags = (w.reasons || []).slice();
      if (w.low) { flags.unshift("low agreement"); }
      row(wb, [w.worker.slice(0, 16), String(w.n), fmt(w.agreement), w.n ? w.p.toExponential(1) : "–", flags.join(", ")], flags.length ? "alarm" : "");
    });
  }

  function loadStudy(study) {
    var base = "/v1/studies/" + encodeURIComponent(study);
    return Promise.all([
      api(base),
      api(base + "/drift?limit=2880"),
      api(base + "/teacher/versions").then(function (b) { return b.versions; }),
      api(base + "/students").then(function (b) {
        return Promise.all(b.students.map(function (s) { return api(base + "/students/" + encodeURIComponent(s.id)); }));
      }),
      fetch("/readyz", { cache: "no-store" }).then(function (r) { return r.json(); }).catch(function () { return null; }),
    ]).then(function (r) {
      $("study").hidden = false;
      renderStudy(study, r[0], r[1], r[2], r[3], r[4]);
      document.body.dataset.loaded = "1";
    });
  }

  function loadList() {
    return api("/v1/studies").then(function (b) {
      $("list").hidden = false;
      $("title").textContent = "studies";
      var tb = $("studies").tBodies[0];
      tb.innerHTML = "";
      b.studies.forEach(function (s) {
        var tr = el("tr");
        var td = el("td");
        var a = el("a", s.id);
        a.href = "/dashboard/" + encodeURIComponent(s.id);
        td.appendChild(a);
        tr.appendChild(td);
        [s.task, s.space, new Date(s.created_at).toLocaleString()].forEach(function (c) { tr.appendChild(el("td", c)); });
        tb.appendChild(tr);
      });
      document.body.dataset.loaded = "1";
    });
  }

  function start() {
    if (!sessionStorage.getItem(KEY)) { showLogin(); return; }
    $("login").hidden = true;
    var m = /^\/dashboard\/([^/]+)\/?$/.exec(location.pathname);
    var load = m ? function () { return loadStudy(decodeURIComponent(m[1])); } : loadList;
    var run = function () {
      load().then(function () { $("error").textContent = ""; }).catch(function (e) {
        if (e.auth) { sessionStorage.removeItem(KEY); showLogin(e.message); return; }
        $("error").textContent = e.message;
      });
    };
    run();
    setInterval(function () { if (!document.hidden && sessionStorage.getItem(KEY)) { run(); } }, REFRESH_MS);
  }

  $("login").addEventListener("submit", function (ev) {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("key").value.trim());
    start();
  });
  takeKeyFromFragment();
  start();
})();
