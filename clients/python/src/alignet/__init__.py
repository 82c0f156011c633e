"""Python client of the alignet server.

alignet collects human odd-one-out judgments, keeps a surrogate teacher
aligned with them, regenerates AligNet triplet data whenever the teacher
improves and distils student heads from it. This package talks to its
HTTP API::

    import alignet
    c = alignet.Client("http://127.0.0.1:8080", key="alg_...")
    c.create_space("clip", dim=512)
    c.upload_embeddings("clip", ids, vectors)          # NumPy, in chunks
    c.create_study("things", space="clip", items=ids)
    c.post_judgments("things", [{"worker": "w1", "items": [a, b, d], "odd": d}])
    df = c.export("things")                             # pandas DataFrame
    t = c.teacher("things"); z = t.transform(vectors)
    path = c.dataset("things", root="data")             # official AligNet layout
    s = c.student("things", "w2v"); u = s.transform(w2v_vectors)
    for batch in c.iter_triplets("things", batch_size=4096): ...
"""

from .client import (
    AlignetError,
    Client,
    Head,
    TripletBatch,
)

__all__ = ["AlignetError", "Client", "Head", "TripletBatch"]
__version__ = "0.1.0"
