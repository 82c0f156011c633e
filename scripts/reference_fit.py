#!/usr/bin/env python3
"""Reference NumPy/SciPy fit of the alignet surrogate teacher.

Same objective as learner.FitTeacher: z = W x~ + b with x~ = (x - mean)/std
(one scalar mean and std over the whole matrix), mean odd-one-out
cross-entropy of the observed choices (k odd, index 0 of softmax over
(s_ij, s_ik, s_jk)) plus lam * ||W - mean(diag W) I||_F^2, W initialised at
c*I with c = sqrt(tau / sd(logit differences)), b = 0, minimised with
SciPy's L-BFGS-B (memory 20). Every `--check-every` iterations it records
held-out accuracy (ties count as wrong) and the fit time so far, excluding
the checks, so time-to-accuracy can be compared with the Go implementation.
Both wall and process CPU seconds are recorded (CPU time is the fairer
measure on a shared machine). Curve rows are [iteration, wall s, cpu s, acc].

Usage:
  pip install numpy scipy
  python3 scripts/reference_fit.py --embeddings ../shared/data/things/clip_vit_b32.npy \
      --train fit.txt --heldout held.txt --lam 0.1 --maxiter 60 --target 0.57

fit.txt and held.txt are "i j k" files; the Go side writes the same split
with `ALIGNET_COMPARE_DIR=dir go test ./internal/offline/ -run TestReferenceComparison -v`.
"""
import argparse
import json
import time

import numpy as np
from scipy.optimize import minimize
from scipy.sparse import coo_matrix


def load_triplets(path):
    a = np.loadtxt(path, dtype=np.int64, ndmin=2)
    return a[:, 0], a[:, 1], a[:, 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--embeddings", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--lam", type=float, default=0.1)
    ap.add_argument("--tau", type=float, default=1.0)
    ap.add_argument("--maxiter", type=int, default=60)
    ap.add_argument("--check-every", type=int, default=5)
    ap.add_argument("--target", type=float, default=0.57)
    args = ap.parse_args()

    x = np.load(args.embeddings).astype(np.float64)
    n, d = x.shape
    mean, std = x.mean(), x.std()
    xt = (x - mean) / std
    I, J, K = load_triplets(args.train)
    hI, hJ, hK = load_triplets(args.heldout)
    m = len(I)
    tau, lam = args.tau, args.lam
    rows = np.concatenate([I, J, I, K, J, K])
    cols = np.concatenate([J, I, K, I, K, J])

    def logits(z, a, b, c):
        return np.stack([np.einsum("ij,ij->i", z[a], z[b]),
                         np.einsum("ij,ij->i", z[a], z[c]),
                         np.einsum("ij,ij->i", z[b], z[c])], axis=1)

    # Initial scale as in Go: unit spread of logit differences at tau.
    step = max(1, m // 20000)
    l0 = logits(xt, I[::step], J[::step], K[::step])
    diffs = np.concatenate([l0[:, 0] - l0[:, 1], l0[:, 0] - l0[:, 2], l0[:, 1] - l0[:, 2]])
    c = np.sqrt(tau / diffs.std())
    w0 = np.zeros((d, d))
    np.fill_diagonal(w0, c)
    p0 = np.concatenate([w0.ravel(), np.zeros(d)])

    def fg(params):
        W = params[: d * d].reshape(d, d)
        b = params[d * d:]
        z = xt @ W.T + b
        l = logits(z, I, J, K) / tau
        mx = l.max(axis=1, keepdims=True)
        e = np.exp(l - mx)
        s = e.sum(axis=1, keepdims=True)
        lse = mx[:, 0] + np.log(s[:, 0])
        ce = np.mean(lse - l[:, 0])
        g = e / s
        g[:, 0] -= 1
        g /= tau * m
        # dZ = A·Z with A the symmetric sparse matrix of logit gradients.
        vals = np.concatenate([g[:, 0], g[:, 0], g[:, 1], g[:, 1], g[:, 2], g[:, 2]])
        A = coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsr()
        dz = A @ z
        gW = dz.T @ xt
        gb = dz.sum(axis=0)
        mdiag = np.mean(np.diag(W))
        R = W - mdiag * np.eye(d)
        obj = ce + lam * np.sum(R * R)
        gW += 2 * lam * R
        return obj, np.concatenate([gW.ravel(), gb])

    def heldout_acc(params):
        W = params[: d * d].reshape(d, d)
        z = xt @ W.T + params[d * d:]
        l = logits(z, hI, hJ, hK)
        return float(np.mean((l[:, 0] > l[:, 1]) & (l[:, 0] > l[:, 2])))

    raw = logits(x, hI, hJ, hK)
    raw_acc = float(np.mean((raw[:, 0] > raw[:, 1]) & (raw[:, 0] > raw[:, 2])))
    state = {"it": 0, "fit_time": 0.0, "fit_cpu": 0.0, "t0": time.perf_counter(),
             "c0": time.process_time(), "curve": [], "reached": None}

    def callback(params):
        state["it"] += 1
        state["fit_time"] += time.perf_counter() - state["t0"]
        state["fit_cpu"] += time.process_time() - state["c0"]
        if state["it"] % args.check_every == 0:
            acc = heldout_acc(params)
            state["curve"].append([state["it"], round(state["fit_time"], 3), round(state["fit_cpu"], 3), acc])
            if state["reached"] is None and acc >= args.target:
                state["reached"] = {"iteration": state["it"], "wall_s": state["fit_time"], "cpu_s": state["fit_cpu"]}
        state["t0"] = time.perf_counter()
        state["c0"] = time.process_time()

    res = minimize(fg, p0, jac=True, method="L-BFGS-B", callback=callback,
                   options={"maxiter": args.maxiter, "maxcor": 20, "gtol": 1e-5})
    state["fit_time"] += time.perf_counter() - state["t0"]
    state["fit_cpu"] += time.process_time() - state["c0"]
    print(json.dumps({
        "raw_heldout_acc": raw_acc,
        "final_heldout_acc": heldout_acc(res.x),
        "iterations": int(res.nit),
        "fit_wall_seconds": round(state["fit_time"], 3),
        "fit_cpu_seconds": round(state["fit_cpu"], 3),
        "target": args.target,
        "reached_target_at": state["reached"],
        "curve": state["curve"],
        "numpy": np.__version__,
    }, indent=1))


if __name__ == "__main__":
    main()
