"""The alignet HTTP client."""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import httpx
import numpy as np
from tqdm.auto import tqdm

#: Default embeddings per upload request.
DEFAULT_CHUNK = 20000

#: Kafka topic the trainer publishes AligNet triplets to.
DEFAULT_TRIPLETS_TOPIC = "alignet.triplets"


class AlignetError(Exception):
    """An error answer of the server: HTTP status, code, message and field."""

    def __init__(self, status: int, code: str, message: str, field: Optional[str] = None):
        self.status, self.code, self.message, self.field = status, code, message, field
        where = f" ({field})" if field else ""
        super().__init__(f"server answered {status} {code}: {message}{where}")


@dataclass
class Head:
    """An affine map z = W·(x − mean)/std + b of embeddings x.

    Teachers (``Client.teacher``) and students (``Client.student``) are
    both affine heads on frozen embeddings; ``meta`` is the provenance the
    server stored with the file.
    """

    W: np.ndarray
    b: np.ndarray
    mean: float
    std: float
    tau: float
    meta: Dict[str, Any] = field(default_factory=dict)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Maps an n×D array (or one D-vector) to the head's representations."""
        x = np.asarray(x, dtype=np.float64)
        z = ((x - self.mean) / self.std) @ self.W.T + self.b
        return z.astype(np.float32)

    def probabilities(self, x: np.ndarray, triplets: np.ndarray) -> np.ndarray:
        """Odd-one-out probabilities of triplets (n×3 row indices into x).

        Column 0 is the probability that the third item is the odd one
        out, 1 the second, 2 the first: softmax of (s01, s02, s12)/tau.
        """
        z = self.transform(x).astype(np.float64)
        t = np.asarray(triplets)
        a, b, c = z[t[:, 0]], z[t[:, 1]], z[t[:, 2]]
        logits = np.stack([(a * b).sum(1), (a * c).sum(1), (b * c).sum(1)], axis=1) / self.tau
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    @classmethod
    def from_npz(cls, data: bytes) -> "Head":
        """Reads a teacher or student .npz as the server writes it."""
        with np.load(io.BytesIO(data)) as z:
            meta: Dict[str, Any] = {}
            if "meta" in z:
                meta = json.loads(bytes(z["meta"]).decode())
            return cls(W=np.array(z["W"]), b=np.array(z["b"]), mean=float(z["mean"].reshape(-1)[0]),
                       std=float(z["std"].reshape(-1)[0]), tau=float(z["tau"].reshape(-1)[0]), meta=meta)


@dataclass
class TripletBatch:
    """A batch of AligNet triplets: indices (n×3 int32, into the generation
    pool, odd one out last) and similarities (n×3 float32, s01 ≥ s02, s12),
    from dataset version ``dataset`` labelled by ``teacher_version``."""

    indices: np.ndarray
    similarities: np.ndarray
    dataset: int
    teacher_version: int


JSON = Union[Dict[str, Any], List[Any]]


class Client:
    """A client of one alignet server.

    ``base_url`` is the server (``http://127.0.0.1:8080``) and ``key`` an
    API key (``ALIGNET_KEY`` by default). Every method raises
    ``AlignetError`` for an error answer.
    """

    def __init__(self, base_url: Optional[str] = None, key: Optional[str] = None, *,
                 timeout: float = 120.0, progress: bool = True, http: Optional[httpx.Client] = None):
        base_url = base_url or os.environ.get("ALIGNET_URL", "http://127.0.0.1:8080")
        key = key or os.environ.get("ALIGNET_KEY", "")
        self.base_url = base_url.rstrip("/")
        self.progress = progress
        self._http = http or httpx.Client(base_url=self.base_url, timeout=timeout,
                                          headers={"Authorization": f"Bearer {key}"})

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -----------------------------------------------------

    def _check(self, r: httpx.Response) -> httpx.Response:
        if r.status_code >= 400:
            try:
                e = r.json()["error"]
                raise AlignetError(r.status_code, e.get("code", ""), e.get("message", ""), e.get("field"))
            except (ValueError, KeyError, TypeError):
                raise AlignetError(r.status_code, "http", r.text[:200]) from None
        return r

    def _json(self, method: str, path: str, body: Any = None, params: Optional[Mapping[str, Any]] = None) -> Any:
        r = self._http.request(method, path, json=body, params=params)
        self._check(r)
        return r.json() if r.content else None

    def _bytes(self, path: str, params: Optional[Mapping[str, Any]] = None) -> bytes:
        return self._check(self._http.get(path, params=params)).content

    # --- spaces, studies, judgments ----------------------------------

    def create_space(self, name: str, dim: int) -> JSON:
        """Creates an embedding space (idempotent for the same dim)."""
        return self._json("PUT", f"/v1/spaces/{name}", {"dim": int(dim)})

    def space(self, name: str) -> JSON:
        """Returns a space with its embedding count."""
        return self._json("GET", f"/v1/spaces/{name}")

    def upload_embeddings(self, space: str, ids: Sequence[str], vectors: np.ndarray,
                          chunk: int = DEFAULT_CHUNK) -> int:
        """Uploads an n×dim array of embeddings named by ids, in chunks of
        ``chunk`` rows as .npy, with a progress bar; returns rows stored."""
        x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        if x.ndim != 2 or x.shape[0] != len(ids):
            raise ValueError(f"vectors of shape {x.shape} for {len(ids)} ids: want one row per id")
        total = 0
        bar = tqdm(total=len(ids), desc=f"embeddings {space}", unit="rows", disable=not self.progress)
        try:
            for lo in range(0, len(ids), chunk):
                hi = min(lo + chunk, len(ids))
                buf = io.BytesIO()
                np.save(buf, x[lo:hi])
                files = {"ids": (None, json.dumps(list(ids[lo:hi])), "application/json"),
                         "vectors": ("vectors.npy", buf.getvalue(), "application/x-npy")}
                r = self._check(self._http.post(f"/v1/spaces/{space}/embeddings", files=files))
                total += int(r.json()["upserted"])
                bar.update(hi - lo)
        finally:
            bar.close()
        return total

    def label_items(self, space: str, labels: Mapping[str, Sequence[str]]) -> int:
        """Stores categories of items (the first is the item's class)."""
        items = [{"id": k, "labels": list(v)} for k, v in labels.items()]
        return int(self._json("POST", f"/v1/spaces/{space}/labels", {"items": items})["upserted"])

    def create_study(self, study: str, space: str, task: str = "odd-one-out",
                     items: Optional[Sequence[str]] = None) -> JSON:
        """Creates a study over a space and adds items to its pool."""
        out = self._json("POST", "/v1/studies", {"id": study, "task": task, "space": space})
        if items is not None:
            self.add_items(study, items)
        return out

    def add_items(self, study: str, items: Sequence[str]) -> JSON:
        """Adds items to a study's item pool."""
        return self._json("POST", f"/v1/studies/{study}/items", {"items": list(items)})

    def post_judgments(self, study: str, judgments: Sequence[Mapping[str, Any]], batch: int = 1000) -> int:
        """Posts judgments (dicts with worker, items, odd, optional id and
        rt_ms) in batches; returns how many were accepted."""
        n = 0
        for lo in range(0, len(judgments), batch):
            part = list(judgments[lo:lo + batch])
            out = self._json("POST", f"/v1/studies/{study}/judgments", part)
            n += int(out.get("accepted", len(part))) if isinstance(out, dict) else len(part)
        return n

    def export(self, study: str) -> Any:
        """Returns the study's judgments as a pandas DataFrame (a list of
        dicts when pandas is not installed)."""
        r = self._check(self._http.get(f"/v1/studies/{study}/judgments", params={"format": "jsonl"}))
        rows = [json.loads(line) for line in r.text.splitlines() if line.strip()]
        try:
            import pandas as pd
        except ImportError:
            return rows
        df = pd.DataFrame(rows)
        if "received_at" in df:
            df["received_at"] = pd.to_datetime(df["received_at"], format="ISO8601")
        return df

    # --- trainer ---------------------------------------------------------

    def set_pool(self, study: str, space: str, items: Optional[Sequence[str]] = None) -> JSON:
        """Sets the study's generation pool: every item of space, or items."""
        body: Dict[str, Any] = {"space": space}
        if items is not None:
            body["items"] = list(items)
        return self._json("PUT", f"/v1/studies/{study}/pool", body)

    def create_student(self, study: str, student: str, space: str, **settings: Any) -> JSON:
        """Registers a student (init, out_dim, loss, temperature,
        learning_rate, decay, epochs, batch_size, val_share, seed)."""
        return self._json("POST", f"/v1/studies/{study}/students", {"id": student, "space": space, **settings})

    def student_info(self, study: str, student: str) -> JSON:
        """Returns a student with its current version, metrics and history."""
        return self._json("GET", f"/v1/studies/{study}/students/{student}")

    def student(self, study: str, student: str, version: Optional[int] = None) -> Head:
        """Downloads a student head (current, or version)."""
        params = {"version": version} if version else None
        return Head.from_npz(self._bytes(f"/v1/studies/{study}/students/{student}.npz", params))

    def student_embeddings(self, study: str, student: str, items: Sequence[str],
                           version: Optional[int] = None) -> np.ndarray:
        """Returns the server-side aligned representations of items (rows in
        the order of items)."""
        params: Dict[str, Any] = {"items": ",".join(items), "format": "npy"}
        if version:
            params["version"] = version
        return np.load(io.BytesIO(self._bytes(f"/v1/studies/{study}/students/{student}/embeddings", params)))

    def teacher(self, study: str, version: Optional[int] = None) -> Head:
        """Downloads the study's teacher (current, or version)."""
        params = {"version": version} if version else None
        return Head.from_npz(self._bytes(f"/v1/studies/{study}/teacher.npz", params))

    def datasets(self, study: str) -> List[Dict[str, Any]]:
        """Lists the study's AligNet datasets, newest first, with provenance."""
        return list(self._json("GET", f"/v1/studies/{study}/datasets")["datasets"])

    def wait_dataset(self, study: str, version: int = 1, timeout: float = 600.0, poll: float = 1.0) -> Dict[str, Any]:
        """Waits until the study has dataset ``version`` (or newer)."""
        deadline = time.monotonic() + timeout
        while True:
            ds = self.datasets(study)
            if ds and ds[0]["version"] >= version:
                return ds[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no dataset {version} of {study} after {timeout}s")
            time.sleep(poll)

    def dataset(self, study: str, root: Union[str, os.PathLike], version: Union[int, str] = "current",
                split: str = "train", transform: str = "alignet", sampling: Optional[str] = None,
                chunk: int = 4 << 20) -> str:
        """Downloads a dataset to ``{root}/{transform}/{split}_{sampling}.npz``,
        the layout the official AligNet loader (data.py) reads, and returns
        the path. ``sampling`` defaults to the dataset's strategy mix and
        clusters (``cluster_border_500``). An interrupted download resumes
        with a Range request (If-Range on the ETag)."""
        info = self._dataset_info(study, version)
        if sampling is None:
            parts = [s["strategy"] for s in info["info"].get("strategies") or []]
            sampling = "+".join(parts) or "alignet"
            if info["info"].get("clusters") and len(parts) == 1 and "cluster" in parts[0]:
                sampling += f"_{info['info']['clusters']}"
        path = os.path.join(os.fspath(root), transform, f"{split}_{sampling}.npz")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        part = path + ".part"
        url = f"/v1/studies/{study}/datasets/{info['version']}.npz"
        etag = f"\"{info['sha256']}\""
        have = os.path.getsize(part) if os.path.exists(part) else 0
        headers = {"Range": f"bytes={have}-", "If-Range": etag} if have else {}
        bar = tqdm(total=info["size"], initial=have, desc=f"dataset {study} v{info['version']}", unit="B",
                   unit_scale=True, disable=not self.progress)
        try:
            with self._http.stream("GET", url, headers=headers) as r:
                if r.status_code >= 400:
                    r.read()
                    self._check(r)
                mode = "ab" if r.status_code == 206 else "wb"
                if mode == "wb":
                    bar.reset(total=info["size"])
                with open(part, mode) as f:
                    for b in r.iter_bytes(chunk):
                        f.write(b)
                        bar.update(len(b))
        finally:
            bar.close()
        if os.path.getsize(part) != info["size"]:
            raise AlignetError(0, "incomplete", f"downloaded {os.path.getsize(part)} of {info['size']} bytes; call again to resume")
        os.replace(part, path)
        return path

    def _dataset_info(self, study: str, version: Union[int, str]) -> Dict[str, Any]:
        for d in self.datasets(study):
            if version == "current" or d["version"] == int(version):
                return d
        raise AlignetError(404, "not_found", f"study {study} has no dataset {version}")

    def iter_triplets(self, study: str, batch_size: int = 4096, *, source: str = "auto",
                      dataset: Union[int, str] = "current", brokers: Optional[str] = None,
                      topic: str = DEFAULT_TRIPLETS_TOPIC, timeout: float = 30.0,
                      root: Optional[str] = None) -> Iterator[TripletBatch]:
        """Yields NumPy batches of one dataset's triplets.

        With ``source="kafka"`` (or "auto" with ``brokers`` given and
        kafka-python installed) it reads the trainer's topic (messages
        keyed by study, see the server's stream package) from the start
        and yields the newest dataset it finds, or ``dataset`` when a
        number, until the whole dataset has arrived or nothing arrives for
        ``timeout`` seconds. Otherwise it downloads the dataset (to ``root``,
        a temporary directory by default) and yields it in batches.
        """
        use_kafka = source == "kafka" or (source == "auto" and brokers is not None and _have_kafka())
        if use_kafka:
            yield from self._kafka_triplets(study, batch_size, dataset, brokers or "127.0.0.1:9092", topic, timeout)
            return
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            path = self.dataset(study, root or tmp, version=dataset)
            info = self._dataset_info(study, dataset)
            with np.load(path) as z:
                idx, sims = z["indices"], z["similarities"]
                for lo in range(0, len(idx), batch_size):
                    yield TripletBatch(np.array(idx[lo:lo + batch_size]), np.array(sims[lo:lo + batch_size]),
                                       int(info["version"]), int(info["teacher_version"]))

    def _kafka_triplets(self, study: str, batch_size: int, dataset: Union[int, str], brokers: str,
                        topic: str, timeout: float) -> Iterator[TripletBatch]:
        from kafka import KafkaConsumer  # type: ignore[import-not-found]

        consumer = KafkaConsumer(topic, bootstrap_servers=brokers.split(","), auto_offset_reset="earliest",
                                 enable_auto_commit=False, consumer_timeout_ms=int(timeout * 1000),
                                 fetch_max_bytes=16 << 20, max_partition_fetch_bytes=16 << 20)
        want = None if dataset == "current" else int(dataset)
        if want is None:
            ds = self.datasets(study)
            want = int(ds[0]["version"]) if ds else None
        got: Dict[int, tuple] = {}
        total = None
        buf_i: List[np.ndarray] = []
        buf_s: List[np.ndarray] = []
        teacher_version = 0
        try:
            for m in consumer:
                h = {k: v.decode() for k, v in (m.headers or [])}
                if h.get("alignet-format") != "alignet-triplets-v1" or h.get("alignet-study") != study:
                    continue
                v = int(h["alignet-dataset"])
                if want is None:
                    want = v
                if v != want:
                    continue
                off, count, total = int(h["alignet-offset"]), int(h["alignet-count"]), int(h["alignet-total"])
                if off in got:
                    continue
                teacher_version = int(h["alignet-teacher-version"])
                n = 3 * count
                idx = np.frombuffer(m.value, dtype="<i4", count=n).reshape(count, 3)
                sims = np.frombuffer(m.value, dtype="<f4", count=n, offset=4 * n).reshape(count, 3)
                got[off] = (count,)
                buf_i.append(idx)
                buf_s.append(sims)
                while sum(len(b) for b in buf_i) >= batch_size:
                    ii, ss = np.concatenate(buf_i), np.concatenate(buf_s)
                    yield TripletBatch(ii[:batch_size], ss[:batch_size], want, teacher_version)
                    buf_i, buf_s = [ii[batch_size:]], [ss[batch_size:]]
                if total is not None and sum(c for (c,) in got.values()) >= total:
                    break
        finally:
            consumer.close()
        if buf_i and sum(len(b) for b in buf_i) > 0:
            yield TripletBatch(np.concatenate(buf_i), np.concatenate(buf_s), want or 0, teacher_version)


def _have_kafka() -> bool:
    try:
        import kafka  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True
