"""Retrieval over HTTP in Search-R1's protocol: a client retriever and a small BM25 server of our own.

The protocol, as Search-R1's ``search_r1/search/retrieval_server.py`` serves it (FastAPI):
``POST /retrieve`` with ``{"queries": [str, ...], "topk": int | null, "return_scores": bool}``
answers ``{"result": [per query: [document, ...]]}``, or with ``return_scores`` true
``{"result": [per query: [{"document": document, "score": float}, ...]]}``, a document being a
corpus record (``{"id", "contents"}``, ``contents`` = ``'"title"\\ntext'``). Its own client
(``search_r1/llm_agent/generation.py``) reads ``document["contents"]``.

A ``topk`` of 0 or null (or none given) asks for the server's default, as Search-R1's server reads it.

``RetrievalClient`` is a ``TextRetriever`` like ``BM25Retriever``: ``search`` gives doc ids
[n, k] and ``texts[id]`` their contents. The server sends documents, not ids, so the client numbers
each distinct document (by its ``id``, else its contents) the first time it comes back and keeps
its text: the text task renders whatever the server returned. Its ``timeout`` bounds a whole
request (connecting, sending, reading), so a server that trickles its answer is cut off in time.
A run uses one when its config names it (``task.retriever.url``, ``top_k``, ``timeout``).

``RetrievalServer`` serves BM25 over a corpus file with the standard library's threading HTTP
server (bounded request size, query count and top-k; per-connection timeouts); a fault inside it
answers 500 with ``{"detail": ...}`` naming it. From a shell:
``python -m testbed.envs.text.retrieval_server --corpus corpus.jsonl --port 8000``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from testbed.envs.text.bm25 import BM25Retriever
from testbed.envs.text.qa_data import Document, document, load_corpus


class RetrievalError(RuntimeError):
    """A retrieval server could not be reached, timed out, refused a request or answered nonsense."""


class RetrievalClient:
    """Search-R1's retrieval protocol as a ``TextRetriever``; ``url`` is the endpoint (``.../retrieve``)."""

    def __init__(self, url: str, top_k: int = 3, timeout: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url: expected http://host:port/retrieve, got {url!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k: expected an integer >= 1, got {top_k!r}")
        if not timeout > 0:
            raise ValueError(f"timeout: expected seconds > 0, got {timeout}")
        self.url, self.top_k, self.timeout = url, top_k, timeout
        self._parts = parts
        self.texts: list[str] = []  # contents of every document seen, by local id
        self._ids: dict[str, int] = {}

    def search(self, queries: Sequence[str], k: int | None = None) -> np.ndarray:
        """Local doc ids [len(queries), k], best first; -1 where the server returned fewer than k."""
        return self._search(queries, k, False)[0]

    def search_with_scores(
        self, queries: Sequence[str], k: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Doc ids and the server's scores (NaN pads), both [len(queries), k]."""
        return self._search(queries, k, True)

    def _search(self, queries: Sequence[str], k: int | None, scores: bool) -> tuple[np.ndarray, np.ndarray]:
        k = k or self.top_k
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        values = np.full((len(queries), k), np.nan)
        if not len(queries):
            return ids, values
        result = self._post({"queries": list(queries), "topk": k, "return_scores": scores}).get("result")
        if not isinstance(result, list) or len(result) != len(queries):
            raise self._error(f"bad response: expected 'result', a list of {len(queries)} lists")
        for i, hits in enumerate(result):
            if not isinstance(hits, list):
                raise self._error(f"bad response: result[{i}] is not a list of documents")
            for j, hit in enumerate(hits[:k]):
                record = hit.get("document") if scores and isinstance(hit, dict) else hit
                if not isinstance(record, dict):
                    raise self._error(f"bad response: result[{i}][{j}] is not a document")
                ids[i, j] = self._intern(record, f"result[{i}][{j}]: ")
                if scores:
                    values[i, j] = _number(hit.get("score"))
        return ids, values

    def _intern(self, record: dict[str, Any], where: str) -> int:
        try:
            doc = document(record, "", where)
        except ValueError as e:
            raise self._error(f"bad response: {e}") from None
        key = doc.id or doc.contents
        if key not in self._ids:
            self._ids[key] = len(self.texts)
            self.texts.append(doc.contents)
        return self._ids[key]

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST ``payload`` and read the answer within ``timeout`` seconds in all (connecting,
        sending and reading: a server that trickles its answer is cut off at the deadline)."""
        status, body = self._exchange(json.dumps(payload).encode())
        if status != 200:
            raise self._error(f"HTTP {status}: {_detail(body)}")
        try:
            answer = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise self._error(f"bad response: not JSON: {body[:80]!r}") from None
        if not isinstance(answer, dict):
            raise self._error("bad response: expected a JSON object")
        return answer

    def _exchange(self, body: bytes) -> tuple[int, bytes]:
        """(status, body) of one request, with ``timeout`` as a total deadline. No proxy: a
        retrieval server sits beside the trainer, and an environment proxy would swallow loopback."""
        parts = self._parts
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = kind(parts.hostname or "", parts.port, timeout=self.timeout)
        deadline = threading.Event()

        def cut() -> None:  # wakes a read blocked on a server that sends a byte now and then
            deadline.set()
            if conn.sock is not None:
                with contextlib.suppress(OSError):  # already closed: nothing to wake
                    conn.sock.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(self.timeout, cut)
        timer.daemon = True
        start = time.monotonic()
        timer.start()
        try:
            target = f"{parts.path or '/'}{'?' if parts.query else ''}{parts.query}"
            conn.request("POST", target, body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
        except (TimeoutError, OSError, http.client.HTTPException) as e:  # socket.timeout is TimeoutError
            if deadline.is_set() or isinstance(e, TimeoutError) or time.monotonic() - start >= self.timeout:
                raise self._error(f"timed out after {self.timeout} s") from None
            raise self._error(f"cannot reach the server ({e or type(e).__name__})") from None
        finally:
            timer.cancel()
            conn.close()
        if deadline.is_set():  # the answer ended as the deadline cut it: it may be partial
            raise self._error(f"timed out after {self.timeout} s")
        return response.status, data

    def _error(self, message: str) -> RetrievalError:
        return RetrievalError(f"retrieval server {self.url}: {message}")


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _detail(body: bytes) -> str:
    """The error text of a server's answer: FastAPI's ``{"detail": ...}``, else the body itself."""
    try:
        return str(json.loads(body)["detail"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode(errors="replace") or "(empty body)"


class _BadRequest(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        try:
            if self.path.rstrip("/") != "/retrieve":
                raise _BadRequest(404, f"no such endpoint {self.path!r}: POST /retrieve")
            self._send(200, self.server.app.answer(self._read_json()))
        except _BadRequest as e:
            self.close_connection = True  # an unread body must not be taken for the next request
            self._send(e.status, {"detail": e.detail})
        except Exception as e:  # a fault of ours: say so (500), never drop the connection unanswered
            self.close_connection = True
            self._send(500, {"detail": f"internal error: {type(e).__name__}: {e}"})

    def _read_json(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise _BadRequest(411, "Content-Length: required")
        if int(length) > self.server.app.max_body:
            raise _BadRequest(413, f"body: {length} bytes, at most {self.server.app.max_body}")
        try:
            return json.loads(self.rfile.read(int(length)))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _BadRequest(400, "body: not JSON") from None

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per request is noise
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: RetrievalServer


class RetrievalServer:
    """BM25 over ``docs`` behind ``POST /retrieve``; ``port=0`` takes a free port (see ``url``)."""

    def __init__(
        self,
        docs: Sequence[Document],
        top_k: int = 3,
        host: str = "127.0.0.1",
        port: int = 0,
        max_queries: int = 4096,
        max_topk: int = 100,
        max_body: int = 4 << 20,
        timeout: float = 30.0,
    ) -> None:
        self.docs = list(docs)
        self.top_k, self.max_queries, self.max_topk, self.max_body = top_k, max_queries, max_topk, max_body
        self.retriever = BM25Retriever([d.contents for d in self.docs], top_k)
        self._lock = threading.Lock()  # bm25s gives no thread-safety promise
        handler = type("Handler", (_Handler,), {"timeout": timeout})  # a stalled client frees its thread
        self.httpd = _Server((host, port), handler)
        self.httpd.app = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/retrieve"  # an AF_INET address: host is a str

    def answer(self, request: Any) -> dict[str, Any]:
        """The response to one ``/retrieve`` request body, or ``_BadRequest`` naming the bad field."""
        if not isinstance(request, dict):
            raise _BadRequest(422, "body: expected a JSON object")
        queries, k, scores = request.get("queries"), request.get("topk"), request.get("return_scores", False)
        if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
            raise _BadRequest(422, "queries: expected a list of strings")
        if len(queries) > self.max_queries:
            raise _BadRequest(413, f"queries: {len(queries)}, at most {self.max_queries} a request")
        if isinstance(k, bool) or not (k is None or isinstance(k, int)) or not 0 <= (k or 0) <= self.max_topk:
            raise _BadRequest(422, f"topk: expected an integer in [0, {self.max_topk}] or null, got {k!r}")
        k = k or self.top_k  # 0 or null: the server's default, as Search-R1's server reads them
        if not isinstance(scores, bool):
            raise _BadRequest(422, f"return_scores: expected true or false, got {scores!r}")
        with self._lock:
            ids, values = self.retriever.search_with_scores(queries, k)
        docs = [[self.docs[d].record() for d in row] for row in ids]
        if scores:
            result = [
                [{"document": d, "score": float(s)} for d, s in zip(row, vals, strict=True)]
                for row, vals in zip(docs, values, strict=True)
            ]
            return {"result": result}
        return {"result": docs}

    def start(self) -> RetrievalServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="retrieval-server", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> RetrievalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Serve BM25 over a corpus in Search-R1's /retrieve protocol."
    )
    parser.add_argument(
        "--corpus", required=True, help='JSONL or Parquet of {"id", "contents"} or {"id", "text"}'
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--topk", type=int, default=3)
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"argument --port: expected 0..65535, got {args.port}")
    if not 1 <= args.topk <= 100:
        parser.error(f"argument --topk: expected 1..100, got {args.topk}")
    try:
        docs = load_corpus(args.corpus)
    except OSError as e:
        parser.exit(2, f"{parser.prog}: error: --corpus {args.corpus}: cannot read it ({e.strerror or e})\n")
    except ValueError as e:  # names the file and line
        parser.exit(2, f"{parser.prog}: error: --corpus {e}\n")
    try:
        server = RetrievalServer(docs, args.topk, args.host, args.port)
    except OSError as e:  # the port is taken, or the host is not this machine's
        parser.exit(2, f"{parser.prog}: error: cannot serve at {args.host}:{args.port} ({e.strerror or e})\n")
    print(f"serving {len(server.docs)} documents at {server.url}", flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()


if __name__ == "__main__":
    main()
