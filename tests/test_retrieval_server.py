"""The retrieval client against our own BM25 server on 127.0.0.1, in Search-R1's /retrieve protocol."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from testbed.envs.text.qa_data import load_corpus, load_qa
from testbed.envs.text.retrieval_server import RetrievalClient, RetrievalError, RetrievalServer

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def server():
    with RetrievalServer(load_corpus(DATA / "corpus.jsonl"), top_k=2, max_queries=8, max_body=4096) as s:
        yield s


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_server_answers_in_search_r1_shapes(server) -> None:
    status, answer = post(server.url, json.dumps({"queries": ["capital of Veloria"], "topk": 2}).encode())
    assert status == 200 and len(answer["result"]) == 1 and len(answer["result"][0]) == 2
    top = answer["result"][0][0]
    assert top["id"] == "0" and top["title"] == "Veloria"
    assert top["contents"] == '"Veloria"\nVeloria is an island kingdom whose capital is Pellmar .'
    body = json.dumps({"queries": ["Idra Quenn", "Amevy"], "return_scores": True}).encode()
    status, answer = post(server.url, body)
    hits = answer["result"]
    assert status == 200 and [len(h) for h in hits] == [2, 2]  # topk defaults to the server's
    assert hits[1][0]["document"]["id"] == "6" and hits[1][0]["score"] >= hits[1][1]["score"] > 0


def test_client_is_a_text_retriever_that_learns_the_documents_it_gets(server) -> None:
    client = RetrievalClient(server.url, top_k=2, timeout=5)
    ids = client.search(["capital of Veloria", "born Idra Quenn", "capital of Veloria"])
    assert ids.shape == (3, 2) and ids[0].tolist() == ids[2].tolist()  # the same document, the same id
    assert client.texts[ids[0, 0]].endswith("whose capital is Pellmar .")
    assert "born in the mountain town of Karsk" in client.texts[ids[1, 0]]
    assert len(client.texts) == len(set(ids.ravel().tolist()))
    ids, scores = client.search_with_scores(["Tessaly Moor heron"], k=1)
    assert "blue heron" in client.texts[ids[0, 0]] and scores[0, 0] > 0
    assert client.search([]).shape == (0, 2)


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (b"{not json", 400, "body: not JSON"),
        (b'{"queries": "one"}', 422, "queries: expected a list of strings"),
        (b'{"queries": ["a"], "topk": -1}', 422, "topk: expected an integer in [0, 100] or null, got -1"),
        (b'{"queries": ["a"], "topk": 101}', 422, "topk: expected an integer in [0, 100] or null, got 101"),
        (
            b'{"queries": ["a"], "return_scores": "yes"}',
            422,
            "return_scores: expected true or false, got 'yes'",
        ),
        (json.dumps({"queries": ["a" * 5000]}).encode(), 413, "body: 5017 bytes, at most 4096"),
    ],
)
def test_bad_requests_are_refused_with_the_field_named(server, body, status, detail) -> None:
    assert post(server.url, body) == (status, {"detail": detail})


@pytest.mark.parametrize("topk", [0, None, "absent"])
def test_topk_zero_or_missing_takes_the_servers_default_as_search_r1s_server_does(server, topk) -> None:
    request = {"queries": ["capital of Veloria"]} | ({} if topk == "absent" else {"topk": topk})
    status, answer = post(server.url, json.dumps(request).encode())
    assert status == 200 and len(answer["result"][0]) == server.top_k == 2


def test_a_fault_inside_the_server_answers_500_with_its_message(server, monkeypatch) -> None:
    def broken(queries, k):
        raise MemoryError("index shard 3 is gone")

    monkeypatch.setattr(server.retriever, "search_with_scores", broken)
    body = json.dumps({"queries": ["capital"]}).encode()
    assert post(server.url, body) == (500, {"detail": "internal error: MemoryError: index shard 3 is gone"})
    with pytest.raises(
        RetrievalError, match=r"HTTP 500: internal error: MemoryError: index shard 3 is gone$"
    ):
        RetrievalClient(server.url, timeout=5).search(["capital"])


def _trickling_server(stop: threading.Event) -> tuple[socket.socket, str]:
    """A server that answers every request with a valid header, then one body byte every 0.1 s."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
            while not stop.wait(0.1):
                try:
                    conn.sendall(b" ")
                except OSError:
                    return

    threading.Thread(target=serve, daemon=True).start()
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}/retrieve"


def test_the_clients_timeout_is_a_total_deadline_not_a_per_read_one() -> None:
    stop = threading.Event()
    listener, url = _trickling_server(stop)
    try:
        start = time.monotonic()
        with pytest.raises(RetrievalError, match=r"timed out after 0\.5 s"):
            RetrievalClient(url, timeout=0.5).search(["x"])
        elapsed = time.monotonic() - start  # a per-read timeout would wait for all 100 bytes: 10 s
    finally:
        stop.set()
        listener.close()
    assert elapsed < 5.0


def test_client_refuses_bad_arguments_at_construction() -> None:
    with pytest.raises(ValueError, match=r"url: expected http://host:port/retrieve, got 'localhost:8000'"):
        RetrievalClient("localhost:8000")
    with pytest.raises(ValueError, match=r"top_k: expected an integer >= 1, got 0"):
        RetrievalClient("http://127.0.0.1:8000/retrieve", top_k=0)
    with pytest.raises(ValueError, match=r"timeout: expected seconds > 0, got 0"):
        RetrievalClient("http://127.0.0.1:8000/retrieve", timeout=0)


def test_client_surfaces_a_refusal_as_one_clear_error(server) -> None:
    client = RetrievalClient(server.url, timeout=5)
    with pytest.raises(
        RetrievalError, match=rf"^retrieval server {server.url}: HTTP 413: queries: 9, at most 8"
    ):
        client.search(["capital"] * 9)
    assert client.search(["capital"] * 8).shape == (8, 3)  # the server still serves


def test_unknown_path_and_unreachable_and_silent_servers_fail_fast(server) -> None:
    with pytest.raises(RetrievalError, match=r"HTTP 404: no such endpoint '/search'"):
        RetrievalClient(server.url.replace("/retrieve", "/search"), timeout=5).search(["x"])
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RetrievalError, match=r"cannot reach the server"):
        RetrievalClient(f"http://127.0.0.1:{port}/retrieve", timeout=5).search(["x"])
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/retrieve"
        with pytest.raises(RetrievalError, match=r"timed out after 0\.2 s"):
            RetrievalClient(url, timeout=0.2).search(["x"])


def test_text_task_renders_what_the_server_returned(server) -> None:
    pytest.importorskip("transformers")
    from test_qa_data import scripted_episode

    from testbed.envs import TaskConfig
    from testbed.envs.text.task import corpus_words, text_core, text_task_config
    from testbed.policies.hf_tiny import train_tokenizer

    qa = load_qa(DATA / "qa_train.parquet", DATA / "corpus.jsonl", test=DATA / "qa_test.jsonl")
    tokenizer = train_tokenizer(corpus_words(qa))
    client = RetrievalClient(server.url, top_k=2, timeout=5)
    core = text_core(text_task_config(TaskConfig()), 1, tokenizer, qa, retriever=client)
    info, reward = scripted_episode(core, tokenizer, 3, "capital of Ostrava Reach", "Sundhal")
    assert "desert republic whose capital is Sundhal" in info and reward == 1.0
    assert core.last_docs[0, :2].tolist() == [0, 1]  # local ids, in the order the server sent them
