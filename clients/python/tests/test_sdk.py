"""SDK tests against a real alignet dev (see conftest.py)."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

import alignet
from conftest import Server

RNG = np.random.default_rng(5)


def wait(pred, timeout=120.0, poll=0.5):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v is not None:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(poll)


def test_spaces_studies_judgments_export(client: alignet.Client) -> None:
    ids = [f"p{i:03d}" for i in range(20)]
    x = RNG.normal(size=(20, 4)).astype(np.float32)
    client.create_space("py-space", 4)
    assert client.upload_embeddings("py-space", ids, x, chunk=7) == 20
    assert client.space("py-space")["embeddings"] == 20
    with pytest.raises(ValueError):
        client.upload_embeddings("py-space", ids[:3], x)
    client.create_study("py-study", space="py-space", items=ids)
    js = [{"id": f"j{i}", "worker": f"w{i % 3}", "items": [ids[i], ids[i + 1], ids[i + 2]], "odd": ids[i + 2], "rt_ms": 900}
          for i in range(15)]
    assert client.post_judgments("py-study", js, batch=4) == 15
    df = wait(lambda: (lambda d: d if len(d) == 15 else None)(client.export("py-study")))
    assert sorted(df["id"]) == sorted(j["id"] for j in js)
    assert set(df.columns) >= {"id", "worker", "items", "odd", "received_at"}
    with pytest.raises(alignet.AlignetError) as e:
        client.create_study("py-study2", space="nope")
    assert e.value.status == 404 and e.value.code == "not_found"


def insert_teacher(server: Server, study: str, w: np.ndarray, tau: float = 1.0) -> None:
    p, d = w.shape
    wh = np.ascontiguousarray(w, dtype="<f4").tobytes().hex()
    bh = np.zeros(p, dtype="<f4").tobytes().hex()
    server.psql(f"""INSERT INTO teacher_versions (study, version, kind, judgments_seen, task, d, p, mean, std, tau, lambda, w, b)
        SELECT '{study}', coalesce(max(version), 0) + 1, 'refit', 0, 'odd-one-out', {d}, {p}, 0, 1, {tau}, 0.1,
               decode('{wh}', 'hex'), decode('{bh}', 'hex') FROM teacher_versions WHERE study = '{study}'""")


def test_trainer_dataset_student_and_stream(client: alignet.Client, server: Server, tmp_path) -> None:
    n, d, ds_ = 300, 8, 6
    ids = [f"item-{i:04d}" for i in range(n)]
    base = RNG.normal(size=(n, d)).astype(np.float32)
    client.create_space("py-teacher", d)
    client.upload_embeddings("py-teacher", ids, base)
    client.create_space("py-w2v", ds_)
    w2v = base[:, :ds_] + 0.1 * RNG.normal(size=(n, ds_)).astype(np.float32)
    client.upload_embeddings("py-w2v", ids, w2v)
    client.create_study("py-things", space="py-teacher", items=ids)
    client.label_items("py-teacher", {it: ["even" if i % 2 == 0 else "odd", "all"] for i, it in enumerate(ids)})
    settings = {"triplets": 30000, "min_interval": "1s", "strategies": {"cluster_border": 1, "random": 1}}
    server.psql("UPDATE studies SET settings = jsonb_set(settings, '{trainer}', '" + json.dumps(settings) + "') WHERE id = 'py-things'")
    assert client.set_pool("py-things", "py-teacher")["size"] == n
    client.create_student("py-things", "w2v", "py-w2v", epochs=2, batch_size=1024)
    # Human judgments, so students are scored on the held-out share.
    js = []
    for i in range(400):
        a, b, c = RNG.choice(n, 3, replace=False)
        z = base[[a, b, c]]
        sims = [z[0] @ z[1], z[0] @ z[2], z[1] @ z[2]]
        odd = [c, b, a][int(np.argmax(sims))]
        js.append({"id": f"h{i}", "worker": "w", "items": [ids[a], ids[b], ids[c]], "odd": ids[odd]})
    client.post_judgments("py-things", js)
    insert_teacher(server, "py-things", np.eye(d, dtype=np.float32) * 1.5)
    teacher = client.teacher("py-things", version=1)
    np.testing.assert_allclose(teacher.W, 1.5 * np.eye(d))
    np.testing.assert_allclose(teacher.transform(base[:3]), 1.5 * base[:3], rtol=1e-5, atol=1e-6)
    with pytest.raises(alignet.AlignetError) as e:
        client.teacher("py-things")  # no learner state: only the stored version
    assert e.value.status == 404

    info = client.wait_dataset("py-things", 1, timeout=300)
    assert info["teacher_version"] == 1 and info["triplets"] == 30000
    assert [s["strategy"] for s in info["info"]["strategies"]] == ["cluster_border", "random"]
    path = client.dataset("py-things", root=tmp_path)
    assert path == os.path.join(str(tmp_path), "alignet", "train_cluster_border+random.npz")
    # Exactly as the official loader (data.py) reads it: no allow_pickle.
    with open(path, "rb") as f:
        data = dict(np.load(f))
    assert data["similarities"].shape == (30000, 3) and data["similarities"].dtype == np.float32
    assert data["indices"].shape == (30000, 3) and data["indices"].dtype.kind == "i"
    fn = data["filenames"]
    assert fn.shape == (30000, 3) and fn.dtype.kind == "U"
    assert (fn == np.array(ids)[data["indices"]]).all()
    s = data["similarities"]
    assert ((s[:, 0] >= s[:, 1]) & (s[:, 0] >= s[:, 2])).all(), "the (0,1) similarity must be the largest"
    # Official sampling names work too, and an interrupted download resumes.
    raw = open(path, "rb").read()
    named = client.dataset("py-things", root=tmp_path / "b", transform="uncertainty_distillation", sampling="cluster_border_2")
    assert named.endswith(os.path.join("uncertainty_distillation", "train_cluster_border_2.npz"))
    part = os.path.join(str(tmp_path), "c", "alignet", "train_x.npz.part")
    os.makedirs(os.path.dirname(part))
    open(part, "wb").write(raw[: len(raw) // 3])
    resumed = client.dataset("py-things", root=tmp_path / "c", sampling="x")
    assert open(resumed, "rb").read() == raw

    def trained():
        st = client.student_info("py-things", "w2v")
        return st if st["current"] else None

    st = wait(trained, timeout=300)
    cur = st["current"]
    assert cur["dataset"] == 1 and cur["promoted"] and cur["metrics"]["held_out"]["n"] > 0
    assert cur["metrics"]["levels"]["n_coarse"] + cur["metrics"]["levels"]["n_fine"] > 0
    head = client.student("py-things", "w2v")
    assert head.W.shape == (ds_, ds_) and head.meta["kind"] == "student"
    some = ids[:5]
    x = client.student_embeddings("py-things", "w2v", some)
    own = head.transform(w2v[:5])
    np.testing.assert_allclose(x, own, rtol=1e-5, atol=1e-6)
    probs = head.probabilities(w2v[:3], np.array([[0, 1, 2]]))
    assert probs.shape == (1, 3) and abs(probs.sum() - 1) < 1e-9

    # Batches from the download, then from the Kafka topic.
    total = sum(len(b.indices) for b in client.iter_triplets("py-things", batch_size=7000, source="download"))
    assert total == 30000
    pytest.importorskip("kafka")
    batches = list(client.iter_triplets("py-things", batch_size=7000, source="kafka", brokers=server.brokers, timeout=20))
    got = np.concatenate([b.indices for b in batches])
    assert len(got) == 30000 and all(b.dataset == 1 and b.teacher_version == 1 for b in batches)
    assert (got == data["indices"]).all()
    np.testing.assert_array_equal(np.concatenate([b.similarities for b in batches]), data["similarities"])
