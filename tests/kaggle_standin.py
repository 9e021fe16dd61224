"""A stand-in Kaggle server for lorakit's tests: stdlib http.server on 127.0.0.1, a free port.

The real ``kaggle`` client reaches it when ``KAGGLE_API_ENVIRONMENT=LOCALHOST`` (the client then sends
``POST http://localhost/api/v1/<service>/<Method>``) and ``HTTP_PROXY`` points here: every request arrives in
proxy form (an absolute URL), API calls and file transfers alike. It speaks the JSON shapes of kagglesdk:

- kernels.KernelsApiService: SaveKernel, GetKernel, GetKernelSessionStatus, ListKernelSessionOutput,
  GetAcceleratorQuotaStatistics; output files are served by ``GET /files/...`` (Range supported);
- competitions.CompetitionApiService: StartSubmissionUpload (+ ``PUT /upload/<token>``), CreateSubmission,
  GetSubmission, ListSubmissions, GetSubmissionLimits, GetLeaderboard, DownloadLeaderboard;
- the refusals of issue 21, each the way Kaggle says it: GetCompetition (``competition_info``: rules accepted,
  deadline, submissions disabled; a competition whose rules are not accepted refuses submissions with a 403 and
  is an invalid source of a push); GetModelInstance (``models``); SaveKernel's whole reply: the invalid_* sources
  and tags of a version it made anyway, a kernel not made yet made under its title's slug, "Maximum batch GPU
  session count of N reached" (``gpu_session_limit``, counting the GPU runs not ended and ``outside_sessions``),
  phone verification (``phone_verified``), a spent GPU quota; GetKernel's docker image and machine shape of the
  latest session; ListSubmissions' SELECTED group (``selected``); the public or private leaderboard
  (``private_leaderboard``, ``overridePublic``);
- security.OAuthService: IntrospectToken. Requests authenticate with Basic ``username:key`` or with a
  Bearer access token listed in ``tokens`` (token -> username);
- datasets.DatasetApiService: CreateDataset, CreateDatasetVersion (files and nested directories of uploaded
  blobs), GetDataset, GetDatasetStatus (a script of processing states); blobs.BlobApiService: StartBlobUpload
  (+ the same ``PUT /upload/<token>``);
- the log stream the client's kernels_logs_stream reads, ``GET /api/v1/kernels/logs/stream/<owner>/<slug>
  ?versionLabel=vN``: server-sent events (chunked) while a run is live, replayed from the start on every
  connection, ``END_OF_LOG`` once it ends; the stored log (a JSON list) otherwise. A test makes a run live
  with ``live_start``, feeds it lines over time with ``log_feed``, ends it with ``run_end``, and drops a
  stream after a number of events with ``stream_drops``.

Faults are injected per method or path prefix: ``fail`` answers an HTTP error, ``drop`` closes the
connection without an answer, ``stall`` never answers (until the server stops) and ``interrupt`` presses
Ctrl-C in the in-process client (SIGINT to the main thread) and never answers, and ``hold`` keeps the
request open until the test releases it (then answered or dropped); with ``after=True`` the
request is processed first (a push saved, a submission made) and only its reply is lost; ``odd`` answers
what a captive portal or a broken proxy would (a web page, an empty body, a redirect, an empty ``{}``). Also: a push
``error``, a status script ending in ERROR, a file download cut half way (``cut``) or sent slowly
(``slow``). Every request is recorded in ``requests`` as (verb, path, body, auth), auth being "basic:<user>",
"bearer:<user>" or "". The server stops itself after ``lifetime`` seconds in any case.
"""

from __future__ import annotations

import base64
import io
import json
import re
import signal
import socket
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional
from urllib.parse import parse_qs, unquote, urlsplit

KERNELS = "kernels.KernelsApiService"
MODELS = "models.ModelApiService"
COMPETITIONS = "competitions.CompetitionApiService"
SECURITY = "security.OAuthService"
DATASETS = "datasets.DatasetApiService"
BLOBS = "blobs.BlobApiService"
LOG_STREAM = "/api/v1/kernels/logs/stream/"
PORTAL_PAGE = b"<!DOCTYPE html><html><head><title>Sign in to the hotel Wi-Fi</title></head><body>Accept the terms</body></html>"
# kind -> (HTTP status, headers, body) of a reply that is not the API's JSON
ODD_REPLIES = {
    "html": (200, {"Content-Type": "text/html; charset=utf-8"}, PORTAL_PAGE),
    "empty": (200, {"Content-Type": "application/json"}, b""),
    "redirect": (302, {"Content-Type": "text/html", "Location": "http://portal.example/login"}, b""),
    "{}": (200, {"Content-Type": "application/json"}, b"{}"),
    "bad-gateway": (502, {"Content-Type": "application/json"}, b"<html>Bad Gateway</html>"),  # a proxy's error
    # a status reply that names no status (Kaggle leaves out a field holding its default) but a failure
    "failure-only": (200, {"Content-Type": "application/json"}, b'{"failureMessage": "CUDA out of memory\\u001b[2J"}'),
}


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def _slugify(title: str) -> str:
    """A title's slug: lower case, punctuation dropped, runs of spaces, '-' and '_' one '-'."""
    return re.sub(r"[-\s_]+", "-", re.sub(r"[^\w\s-]", "", title.lower())).strip("-")


def _gpu_asked(request: dict) -> bool:
    """Whether a SaveKernel request asks for a GPU: a GPU machine shape, or enableGpu without a shape."""
    shape = str(request.get("machineShape") or "")
    return shape.lower().startswith("nvidia") or (not shape and bool(request.get("enableGpu")))


@dataclass
class Fault:
    method: str  # API method name ("SaveKernel") or a path prefix ("/files/")
    status: int  # the HTTP error to answer (action "error")
    times: Optional[int] = 1  # None: every time
    headers: dict = field(default_factory=dict)
    message: str = ""
    action: str = "error"  # "error", "drop" (close without answering), "stall" (never answer), "interrupt"
    after: bool = False  # process the request first: only the reply is lost
    skip: int = 0  # let this many matching requests through before the fault applies
    hold: Optional["Hold"] = None  # action "hold": the request held open until the test releases it


@dataclass
class Hold:
    """A request the stand-in holds open (StandinState.hold): ``seen`` is set once one arrived (and, with
    after=True, was processed); ``release()`` lets it go on, to be answered or, with then="drop", dropped."""

    then: str = "answer"
    seen: threading.Event = field(default_factory=threading.Event)
    gate: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.gate.set()

    def wait(self, stopped: threading.Event) -> None:
        """Until released, or the server stops."""
        while not self.gate.wait(0.05) and not stopped.is_set():
            pass


@dataclass
class KernelVersion:
    number: int
    text: str
    request: dict
    statuses: list  # consumed one per status call; the last one stays
    outputs: dict  # file name -> bytes
    log: str = ""
    failure_message: str = ""
    live: Optional[list] = None  # the events of a live run, fed by the test; None: serve the stored log
    ended: bool = False
    image: str = ""  # the Docker image its session ran on


@dataclass
class StoredDataset:
    owner: str
    slug: str
    title: str
    private: bool
    license: str
    description: str
    versions: list  # one {path: bytes} per version
    notes: list  # the version notes of each version
    statuses: list  # GetDatasetStatus answers, consumed one per call; the last one stays


@dataclass
class StoredSubmission:
    ref: int
    description: str
    file_name: str
    content: bytes
    date: datetime
    statuses: list
    public: Optional[str] = None
    private: Optional[str] = None
    error: str = ""


class StandinState:
    def __init__(self, username: str, key: str, competition: str):
        self.username = username
        self.key = key
        self.competition = competition
        self.lock = threading.RLock()
        self.requests: list = []  # (method, path, json body or None)
        self.faults: list = []
        self.kernels: dict = {}  # (owner, slug) -> [KernelVersion]
        self.push_error = ""
        self.status_script = ["QUEUED", "RUNNING", "COMPLETE"]
        self.failure_message = ""
        self.run_hook: Callable[[str, int], tuple] = lambda text, n: ({}, "")
        self.cut: set = set()  # output file names whose download is cut half way, every time
        self.cut_once: set = set()  # ... only the first time (a resumed download then completes)
        self.uploads: dict = {}
        self.submissions: list = []
        self.next_ref = 50000001
        self.num_today = 1
        self.allowed_now = 4
        self.score_hook: Callable[[bytes], tuple] = lambda content: ("0.86120", None)
        self.submission_script = ["PENDING", "COMPLETE"]
        self.leaderboard = [
            {"teamId": 11, "teamName": "top team", "score": "0.86950"},
            {"teamId": 12, "teamName": "second team", "score": "0.86210"},
        ]
        self.team_name = "alice"
        self.quota = {"timeUsed": "37800s", "totalTimeAllowed": "108000s"}
        self.page_size_cap = 100
        self.tokens: dict = {}  # active access tokens -> username
        self.slow: dict = {}  # output file name -> seconds its download takes, every time
        self.released = threading.Event()  # set on stop: ends every stalled request
        self.log_changed = threading.Condition(self.lock)  # a live log got a line, or its run ended
        self.stream_drops: list = []  # each new log stream drops its connection after this many events
        self.datasets: dict = {}  # (owner, slug) -> StoredDataset
        self.dataset_status_script = ["BLOBS_RECEIVED", "READY"]
        self.newest_claimed: Optional[int] = None  # GetKernel's currentVersionNumber, when a test makes Kaggle lie
        # issue 21: what Kaggle says no to
        self.competition_info = {"userHasEntered": True, "deadline": _iso(datetime.now(timezone.utc) + timedelta(days=30)),
                                 "submissionsDisabled": False}
        self.datasets[("amananandrai", "ag-news-classification-dataset")] = StoredDataset(
            "amananandrai", "ag-news-classification-dataset", "AG News Classification Dataset", False, "unknown",
            "AG News as CSVs", [{"train.csv": b"", "test.csv": b""}], [""], ["READY"])
        self.models: dict = {}  # (owner, model, framework, instance) -> its newest version number
        self.tags = {"nlp", "text classification", "transformers"}
        self.gpu_session_limit: Optional[int] = None  # "Maximum batch GPU session count"; None: no limit
        self.outside_sessions = 0  # GPU sessions held by runs of other kernels
        self.phone_verified = True
        self.docker_image = "gcr.io/kaggle-gpu-images/python:v160"
        self.selected: set = set()  # refs of submissions selected for the private leaderboard
        self.private_leaderboard: Optional[list] = None  # the private board's rows, once the competition has one
        self.slug_of_title: Callable[[str], str] = _slugify  # Kaggle's rule for a new kernel's slug (a test may
        # give it one lorakit does not know, as Kaggle's own may differ on characters lorakit drops)

    # -- helpers used by tests -------------------------------------------------------------------------
    def fail(self, method: str, status: int, times: Optional[int] = 1, headers: Optional[dict] = None, message: str = "",
             after: bool = False, skip: int = 0):
        with self.lock:
            self.faults.append(Fault(method, status, times, dict(headers or {}), message, "error", after, skip))

    def drop(self, method: str, times: Optional[int] = 1, after: bool = False, skip: int = 0):
        with self.lock:
            self.faults.append(Fault(method, 0, times, action="drop", after=after, skip=skip))

    def stall(self, method: str, times: Optional[int] = 1, after: bool = False, skip: int = 0):
        with self.lock:
            self.faults.append(Fault(method, 0, times, action="stall", after=after, skip=skip))

    def odd(self, method: str, kind: str, times: Optional[int] = 1, after: bool = False, skip: int = 0):
        """Answer with what is not the API's JSON, ``kind`` being one of ODD_REPLIES."""
        assert kind in ODD_REPLIES, kind
        with self.lock:
            self.faults.append(Fault(method, 200, times, message=kind, action="odd", after=after, skip=skip))

    def hold(self, method: str, after: bool = False, then: str = "answer", skip: int = 0) -> Hold:
        """Hold the next request of ``method`` open until the test calls ``release()`` on what this returns:
        before processing it (it is processed once released, even when the client has gone meanwhile) or, with
        ``after``, once processed (its reply held back). Released, it is answered, or with then="drop" its
        connection is closed without an answer."""
        assert then in ("answer", "drop"), then
        held = Hold(then)
        with self.lock:
            self.faults.append(Fault(method, 0, 1, action="hold", after=after, skip=skip, hold=held))
        return held

    def interrupt(self, method: str, after: bool = False, skip: int = 0):
        """Ctrl-C: SIGINT to this process's main thread (the in-process client) on that request, left unanswered."""
        with self.lock:
            self.faults.append(Fault(method, 0, 1, action="interrupt", after=after, skip=skip))

    def live_start(self, owner: str, slug: str, number: int) -> None:
        """Make a pushed version a live run: RUNNING, its log streamed as fed, until run_end."""
        with self.lock:
            version = self.versions(owner, slug)[number - 1]
            version.live, version.ended, version.statuses = [], False, ["RUNNING"]

    def log_feed(self, owner: str, slug: str, number: int, *texts: str) -> None:
        with self.lock:
            version = self.versions(owner, slug)[number - 1]
            for text in texts:
                version.live.append({"stream_name": "stdout", "time": float(len(version.live)), "data": text})
            self.log_changed.notify_all()

    def run_end(self, owner: str, slug: str, number: int, status: str = "COMPLETE") -> None:
        """End a live run: its events become the stored log, its status ``status``."""
        with self.lock:
            version = self.versions(owner, slug)[number - 1]
            version.log, version.ended, version.statuses = json.dumps(version.live), True, [status]
            self.log_changed.notify_all()

    def dataset_files(self, owner: str, slug: str, number: int = 0) -> dict:
        """{path: bytes} of a dataset's version ``number`` (default: the newest)."""
        versions = self.datasets[(owner, slug)].versions
        return versions[number - 1] if number else versions[-1]

    def calls(self, method: str) -> list:
        return [r for r in self.requests if r[1].endswith("/" + method) or r[1].startswith(method)]

    def versions(self, owner: str, slug: str) -> list:
        return self.kernels.get((owner, slug), [])


class _Handler(BaseHTTPRequestHandler):
    server_version = "KaggleStandin/1.0"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    @property
    def state(self) -> StandinState:
        return self.server.state  # type: ignore[attr-defined]

    # -- plumbing ----------------------------------------------------------------------------------------
    def _path(self) -> str:
        return unquote(urlsplit(self.path).path)

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data = bytearray()
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                data += self.rfile.read(size)
                self.rfile.readline()
            return bytes(data)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, content_type: str, headers: Optional[dict] = None):
        if getattr(self, "_reply_lost", False):  # processed; a fault answers instead
            return
        if getattr(self, "_held", None) is not None:  # processed under the lock: sent once released (_held_reply)
            self._buffered = (status, body, content_type, headers)
            return
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: dict, headers: Optional[dict] = None):
        self._send(status, json.dumps(data).encode(), "application/json", headers)

    def _error(self, status: int, message: str, headers: Optional[dict] = None):
        self._json(status, {"code": status, "message": message}, headers)

    def _fault_take(self, key: str, after: bool) -> Optional[Fault]:
        with self.state.lock:
            for fault in self.state.faults:
                if fault.after != after:
                    continue
                if fault.method == key or (fault.method.startswith("/") and key.startswith(fault.method)):
                    if fault.skip > 0:
                        fault.skip -= 1
                        return None
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self.state.faults.remove(fault)
                    return fault
        return None

    def _odd_answer(self, kind: str) -> None:
        status, headers, body = ODD_REPLIES[kind]
        self._reply_lost = False
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _fault_answer(self, fault: Fault) -> None:
        if fault.action == "odd":
            return self._odd_answer(fault.message)
        if fault.action == "interrupt":
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        if fault.action in ("stall", "interrupt"):
            self.state.released.wait()
        if fault.action in ("stall", "drop", "interrupt"):
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._reply_lost = False
        self._error(fault.status, fault.message or f"stand-in fault {fault.status}", fault.headers)

    def _fault(self, key: str) -> bool:
        """Answer a fault due before processing; True when one was."""
        fault = self._fault_take(key, after=False)
        if fault is None:
            return False
        if fault.action == "hold":
            return self._held_request(fault.hold)
        self._fault_answer(fault)
        return True

    # -- requests held open (Hold) -----------------------------------------------------------------------------
    def _held_request(self, held: Hold) -> bool:
        """Hold a request before processing it; True when it is dropped once released (else it goes on)."""
        held.seen.set()
        held.wait(self.state.released)
        if held.then == "drop" or self.state.released.is_set():
            self._drop()
            return True
        return False

    def _held_reply(self, held: Hold, handler: Callable[[], None]) -> None:
        """Process a request, then hold its reply (outside the state's lock) until released."""
        self._held, self._buffered = held, None
        handler()
        self._held = None
        held.seen.set()
        held.wait(self.state.released)
        if held.then == "drop" or self.state.released.is_set() or self._buffered is None:
            return self._drop()
        return self._send(*self._buffered)

    def _processed(self, key: str, handler: Callable[[], None]) -> None:
        """Run ``handler``; when a fault is due after processing, lose its reply and answer the fault."""
        fault = self._fault_take(key, after=True)
        if fault is not None and fault.action == "hold":
            return self._held_reply(fault.hold, handler)
        self._reply_lost = fault is not None
        handler()
        if fault is not None:
            self._fault_answer(fault)

    def _auth(self) -> str:
        header = self.headers.get("Authorization") or ""
        if header.startswith("Basic "):
            expected = base64.b64encode(f"{self.state.username}:{self.state.key}".encode()).decode()
            return f"basic:{self.state.username}" if header == f"Basic {expected}" else ""
        if header.startswith("Bearer "):
            user = self.state.tokens.get(header[len("Bearer "):])
            return f"bearer:{user}" if user else ""
        return ""

    # -- verbs -------------------------------------------------------------------------------------------------
    def do_POST(self):
        path = self._path()
        raw = self._body()
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        auth = self._auth()
        with self.state.lock:
            self.state.requests.append(("POST", path, body, auth))
        parts = path.strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["api", "v1"]:
            return self._error(404, f"no route {path}")
        service, method = parts[2], parts[3]
        if self._fault(method):
            return None
        if not auth and method != "IntrospectToken":
            return self._error(401, "Unauthenticated")
        handler = getattr(self, f"api_{method}", None)
        if handler is None or service not in (KERNELS, COMPETITIONS, SECURITY, DATASETS, BLOBS, MODELS):
            return self._error(404, f"unknown method {service}/{method}")

        def handle():
            with self.state.lock:
                handler(body or {})

        return self._processed(method, handle)

    def do_GET(self):
        path = self._path()
        with self.state.lock:
            self.state.requests.append(("GET", path, None, self._auth()))
        if self._fault(path):
            return None
        if path.startswith(LOG_STREAM):
            return self._log_stream(path[len(LOG_STREAM):])
        parts = path.strip("/").split("/")
        if parts[0] == "files" and len(parts) >= 5:
            owner, slug, number = parts[1], parts[2], int(parts[3])
            name = "/".join(parts[4:])
            versions = self.state.versions(owner, slug)
            if not 1 <= number <= len(versions) or name not in versions[number - 1].outputs:
                return self._error(404, "no such file")
            return self._file(name, versions[number - 1].outputs[name])
        return self._error(404, f"no route {path}")

    def do_PUT(self):
        path = self._path()
        data = self._body()
        with self.state.lock:
            self.state.requests.append(("PUT", path, len(data), self._auth()))
        if self._fault(path):
            return None
        parts = path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "upload" and parts[1] in self.state.uploads:
            with self.state.lock:
                self.state.uploads[parts[1]]["content"] = data
            return self._json(200, {})
        return self._error(404, "unknown upload")

    def _log_stream(self, rest: str):
        if not self._auth():
            return self._error(401, "Unauthenticated")
        owner, _, slug = rest.partition("/")
        label = parse_qs(urlsplit(self.path).query).get("versionLabel", [""])[0]
        with self.state.lock:
            version = self._version({"userName": owner, "kernelSlug": slug, "versionLabel": label})
            live = version is not None and version.live is not None and not version.ended
            drop_after = self.state.stream_drops.pop(0) if live and self.state.stream_drops else None
        if version is None:
            return self._error(404, "kernel or version not found")
        if not live:
            return self._send(200, (version.log or "[]").encode(), "application/json")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = 0
        while not self.state.released.is_set():
            with self.state.lock:
                if sent == len(version.live) and not version.ended:
                    self.state.log_changed.wait(0.05)
                events, ended = list(version.live[sent:]), version.ended
            for event in events:
                if drop_after is not None and sent >= drop_after:
                    return self._drop()
                self._chunk(f"data: {json.dumps(event)}\n\n")
                sent += 1
            if ended:
                self._chunk("data: END_OF_LOG\n\n")
                self.wfile.write(b"0\r\n\r\n")
                return None
        return self._drop()

    def _chunk(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _file_headers(self, status: int, length: int, headers: dict) -> None:
        """The headers of a file response that promises ``length`` bytes."""
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()

    def _file(self, name: str, content: bytes):
        total = len(content)
        headers = {
            "Accept-Ranges": "bytes",
            "ETag": f'"{abs(hash(content)) % 10**12}"',
            "Last-Modified": formatdate(usegmt=True),
        }
        start = 0
        status = 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0] or 0)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{total - 1}/{total}"
        chunk = content[start:]
        cut = name in self.state.cut
        with self.state.lock:
            if name in self.state.cut_once:
                self.state.cut_once.discard(name)
                cut = True
        if cut:
            # Promise the whole file, send half of it, drop the connection.
            self._file_headers(status, len(chunk), headers)
            self.wfile.write(chunk[: max(1, len(chunk) // 2)])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return None
        delay = self.state.slow.get(name)
        if delay:
            # Promise the whole file and trickle it out in ten pieces over `delay` seconds.
            self._file_headers(status, len(chunk), headers)
            step = max(1, -(-len(chunk) // 10))
            for offset in range(0, len(chunk), step):
                time.sleep(delay / 10)
                self.wfile.write(chunk[offset : offset + step])
                self.wfile.flush()
            return None
        return self._send(status, chunk, "application/octet-stream", headers)

    # -- kernels --------------------------------------------------------------------------------------------------
    def _owned(self, owner: str) -> bool:
        return owner == self.state.username

    def _version(self, body: dict):
        owner, slug = body.get("userName", ""), body.get("kernelSlug", "")
        versions = self.state.versions(owner, slug)
        if not versions:
            return None
        label = body.get("versionLabel")
        if not label:
            return versions[-1]
        if not label.startswith("v") or not label[1:].isdigit():
            return None
        number = int(label[1:])
        return versions[number - 1] if 1 <= number <= len(versions) else None

    def api_SaveKernel(self, body):
        slug = body.get("slug") or ""
        if slug.count("/") != 1:
            return self._error(400, "slug must be owner/slug")
        owner, name = slug.split("/")
        if not self._owned(owner):
            return self._error(403, f"you do not own {slug}")
        if self.state.push_error:
            return self._json(200, {"ref": "", "url": "", "error": self.state.push_error})
        refusal = self._push_refusal(body)
        if refusal:  # what `kaggle kernels push` prints as "Kernel push error: ..."
            return self._json(200, {"ref": "", "url": "", "error": refusal})
        name = self._saved_slug(owner, name, body)
        versions = self.state.kernels.setdefault((owner, name), [])
        number = len(versions) + 1
        outputs, log = self.state.run_hook(body.get("text", ""), number)
        statuses = list(self.state.status_script)
        if body.get("kernelExecutionType") == "QUICK_SAVE":
            statuses = ["NEW_SCRIPT"]
        versions.append(
            KernelVersion(number, body.get("text", ""), body, statuses, dict(outputs), log, self.state.failure_message,
                          image=self.state.docker_image)
        )
        url = f"https://www.kaggle.com/code/{owner}/{name}"
        return self._json(200, {"ref": f"/code/{owner}/{name}", "url": url, "versionNumber": number,
                                "kernelId": self._kernel_id(owner, name), **self._invalid_of(body)})

    def api_GetKernel(self, body):
        version = self._version(body)
        if version is None:
            return self._error(404, "kernel or version not found")
        owner, slug = body.get("userName", ""), body.get("kernelSlug", "")
        if not self._owned(owner):
            return self._error(403, "private kernel")
        latest = self.state.newest_claimed or len(self.state.versions(owner, slug))
        metadata = {"ref": f"{owner}/{slug}", "slug": slug, "author": owner, "currentVersionNumber": latest,
                    "language": "python", "kernelType": "script", "id": self._kernel_id(owner, slug),
                    **self._session_of(self.state.versions(owner, slug)[-1])}
        blob = {"source": version.text, "language": "python", "kernelType": "script", "slug": slug}
        return self._json(200, {"metadata": metadata, "blob": blob})

    def api_GetKernelSessionStatus(self, body):
        version = self._version(body)
        if version is None:
            return self._error(404, "kernel or version not found")
        if not self._owned(body.get("userName", "")):
            return self._error(403, "private kernel")
        status = version.statuses[0]
        if len(version.statuses) > 1:
            version.statuses.pop(0)
        data = {"status": status}
        if status == "ERROR" and version.failure_message:
            data["failureMessage"] = version.failure_message
        return self._json(200, data)

    def api_ListKernelSessionOutput(self, body):
        version = self._version(body)
        if version is None:
            return self._error(404, "kernel or version not found")
        names = sorted(version.outputs)
        size = min(int(body.get("pageSize") or 20), self.state.page_size_cap)
        start = int(body.get("pageToken") or 0)
        page = names[start : start + size]
        owner, slug = body["userName"], body["kernelSlug"]
        files = [{"url": f"http://localhost/files/{owner}/{slug}/{version.number}/{n}", "fileName": n} for n in page]
        data = {"files": files, "log": version.log}
        if start + size < len(names):
            data["nextPageToken"] = str(start + size)
        return self._json(200, data)

    def api_GetAcceleratorQuotaStatistics(self, body):
        return self._json(200, {"quotaRefreshTime": "2025-04-26T00:00:00.000Z", "gpuQuota": self.state.quota})

    # -- competitions ----------------------------------------------------------------------------------------------
    def _competition_ok(self, body) -> bool:
        if body.get("competitionName") != self.state.competition:
            self._error(404, "competition not found")
            return False
        return True

    def api_GetSubmissionLimits(self, body):
        if not self._competition_ok(body):
            return None
        return self._json(
            200, {"numToday": self.state.num_today, "numTotal": self.state.num_today + 3, "numAllowedNow": self.state.allowed_now}
        )

    def api_StartSubmissionUpload(self, body):
        if not self._competition_ok(body) or not self._submissions_open():
            return None
        token = f"tok{len(self.state.uploads) + 1}"
        self.state.uploads[token] = {"fileName": body.get("fileName"), "content": None}
        return self._json(200, {"token": token, "createUrl": f"http://localhost/upload/{token}"})

    def api_CreateSubmission(self, body):
        if not self._competition_ok(body) or not self._submissions_open():
            return None
        upload = self.state.uploads.get(body.get("blobFileTokens", ""))
        if upload is None or upload["content"] is None:
            return self._error(400, "file was not uploaded")
        if self.state.allowed_now <= 0:
            return self._error(400, "daily submission limit reached")
        self.state.allowed_now -= 1
        self.state.num_today += 1
        ref = self.state.next_ref
        self.state.next_ref += 1
        public, private = self.state.score_hook(upload["content"])
        self.state.submissions.append(
            StoredSubmission(
                ref,
                body.get("submissionDescription", ""),
                upload["fileName"],
                upload["content"],
                datetime.now(timezone.utc) + timedelta(seconds=len(self.state.submissions)),
                list(self.state.submission_script),
                public,
                private,
            )
        )
        return self._json(200, {"message": "Successfully submitted", "ref": ref})

    def _submission_json(self, sub: StoredSubmission, advance: bool) -> dict:
        status = sub.statuses[0]
        if advance and len(sub.statuses) > 1:
            sub.statuses.pop(0)
        data = {
            "ref": sub.ref,
            "date": _iso(sub.date),
            "description": sub.description,
            "fileName": sub.file_name,
            "status": status,
            "submittedBy": self.state.username,
            "teamName": self.state.team_name,
        }
        if status == "COMPLETE":
            if sub.public is not None:
                data["publicScore"] = sub.public
            if sub.private is not None:
                data["privateScore"] = sub.private
        if status == "ERROR":
            data["errorDescription"] = sub.error or "scoring failed"
        return data

    def api_GetSubmission(self, body):
        for sub in self.state.submissions:
            if sub.ref == int(body.get("ref") or 0):
                return self._json(200, self._submission_json(sub, advance=True))
        return self._error(404, "submission not found")

    def api_ListSubmissions(self, body):
        if not self._competition_ok(body):
            return None
        subs = sorted(self.state.submissions, key=lambda s: s.date, reverse=True)
        if body.get("group") == "SUBMISSION_GROUP_SELECTED":
            subs = [s for s in subs if s.ref in self.state.selected]
        size = min(int(body.get("pageSize") or 20), self.state.page_size_cap)
        start = int(body.get("pageToken") or 0)
        page = subs[start : start + size]
        data = {"submissions": [self._submission_json(s, advance=False) for s in page]}
        if start + size < len(subs):
            data["nextPageToken"] = str(start + size)
        return self._json(200, data)

    def _board(self, public: bool = True) -> list:
        if not public and self.state.private_leaderboard is not None:  # Kaggle's default once it has one
            return [dict(r, submissionDate=r.get("submissionDate", "2025-04-20T12:00:00.000Z"))
                    for r in self.state.private_leaderboard]
        rows = list(self.state.leaderboard)
        best = [s for s in self.state.submissions if s.public is not None and s.statuses[0] == "COMPLETE"]
        if best:
            top = max(best, key=lambda s: float(s.public))
            rows.append({"teamId": 99, "teamName": self.state.team_name, "score": top.public})
        rows.sort(key=lambda r: -float(r["score"]))
        for r in rows:
            r.setdefault("submissionDate", "2025-04-20T12:00:00.000Z")
        return rows

    def api_GetLeaderboard(self, body):
        if not self._competition_ok(body):
            return None
        rows = self._board(public=bool(body.get("overridePublic")))
        size = min(int(body.get("pageSize") or 20), self.state.page_size_cap)
        start = int(body.get("pageToken") or 0)
        data = {"submissions": rows[start : start + size]}
        if start + size < len(rows):
            data["nextPageToken"] = str(start + size)
        return self._json(200, data)

    def api_DownloadLeaderboard(self, body):
        if not self._competition_ok(body):
            return None
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            lines = ["Rank,TeamId,TeamName,LastSubmissionDate,Score"]
            for i, r in enumerate(self._board(public=False), 1):
                lines.append(f"{i},{r['teamId']},{r['teamName']},{r['submissionDate']},{r['score']}")
            board = "public" if self.state.private_leaderboard is None else "private"
            archive.writestr(f"{self.state.competition}-{board}leaderboard.csv", "\n".join(lines) + "\n")
        return self._send(200, buffer.getvalue(), "application/zip", {"Last-Modified": formatdate(usegmt=True)})


    # -- issue 21: what Kaggle says no to ---------------------------------------------------------------------------
    def api_GetCompetition(self, body):
        name = body.get("competitionName", "")
        if name != self.state.competition:
            return self._error(404, "Competition not found")
        info = {k: v for k, v in self.state.competition_info.items() if v not in (False, None, "", 0)}  # defaults left out
        return self._json(200, {"id": 4711, "ref": f"https://www.kaggle.com/competitions/{name}", "title": name,
                                "maxDailySubmissions": 5, **info})

    def _submissions_open(self) -> bool:
        """Refuse a submission as Kaggle does, with a 403 when the rules are not accepted; True when open."""
        if not self.state.competition_info.get("userHasEntered"):
            self._error(403, "You must accept this competition's rules before you'll be able to submit.")
            return False
        if self.state.competition_info.get("submissionsDisabled"):
            self._error(400, "Submissions are disabled for this competition.")
            return False
        return True

    def api_GetModelInstance(self, body):
        framework = str(body.get("framework", "")).replace("MODEL_FRAMEWORK_", "").replace("_", "").lower()
        key = (body.get("ownerSlug", ""), body.get("modelSlug", ""), framework, body.get("instanceSlug", ""))
        if key not in self.state.models:
            return self._error(404, "Model instance not found")
        return self._json(200, {"id": 91, "slug": key[3], "framework": body.get("framework"),
                                "versionNumber": self.state.models[key]})

    def _kernel_id(self, owner: str, slug: str) -> int:
        keys = list(self.state.kernels)
        return 4242 + (keys.index((owner, slug)) if (owner, slug) in keys else len(keys))

    def _session_of(self, version: KernelVersion) -> dict:
        """GetKernel's word on the kernel's latest session: its image and machine shape."""
        return {"dockerImage": version.image, "machineShape": version.request.get("machineShape") or "NvidiaTeslaT4"}

    def _gpu_sessions(self) -> int:
        """The GPU sessions held now: the GPU runs not ended, of every kernel, and those of other kernels."""
        held = sum(1 for versions in self.state.kernels.values() for v in versions
                   if v.statuses[0] in ("QUEUED", "RUNNING") and _gpu_asked(v.request))
        return held + self.state.outside_sessions

    def _push_refusal(self, body: dict) -> str:
        """Kaggle's refusal of a push that would start a GPU (or internet) session it will not lend; "" if none."""
        session = body.get("kernelExecutionType") != "QUICK_SAVE"
        gpu = session and _gpu_asked(body)
        if session and (gpu or body.get("enableInternet")) and not self.state.phone_verified:
            return "Phone verification is required to use GPUs or the internet. Verify your phone number in Settings."
        quota = self.state.quota
        seconds = [float(str(quota.get(k, "0s")).rstrip("s")) for k in ("timeUsed", "timeReserved", "totalTimeAllowed")]
        if gpu and seconds[0] + seconds[1] >= seconds[2]:
            return "You have exceeded your weekly GPU quota."
        limit = self.state.gpu_session_limit
        if gpu and limit is not None and self._gpu_sessions() >= limit:
            return f"Maximum batch GPU session count of {limit} reached."
        return ""

    def _saved_slug(self, owner: str, name: str, body: dict) -> str:
        """The kernel a push lands in: the one named when it exists, else a new one under its title's slug."""
        if self.state.versions(owner, name) or not body.get("newTitle"):
            return name
        return self.state.slug_of_title(body["newTitle"]) or name

    def _invalid_of(self, body: dict) -> dict:
        """The invalid* lists of a SaveKernel reply: sources that cannot be attached, unknown tags."""
        def dataset_ok(source):
            found = self.state.datasets.get(tuple(source.split("/")[:2]))
            return found is not None and (not found.private or self._owned(found.owner))

        def model_ok(source):
            parts = source.split("/")
            key = (*parts[:2], parts[2].replace("-", "").replace("_", "").lower(), parts[3]) if len(parts) == 5 else ()
            return key in self.state.models and int(parts[4]) <= self.state.models[key]

        entered = self.state.competition_info.get("userHasEntered")
        lists = {
            "invalidDatasetSources": [d for d in body.get("datasetDataSources") or [] if not dataset_ok(d)],
            "invalidCompetitionSources": [c for c in body.get("competitionDataSources") or []
                                          if c != self.state.competition or not entered],
            "invalidKernelSources": [k for k in body.get("kernelDataSources") or []
                                     if not self.state.versions(*k.split("/")[:2])],
            "invalidModelSources": [m for m in body.get("modelDataSources") or [] if not model_ok(m)],
            "invalidTags": [t for t in body.get("categoryIds") or [] if t not in self.state.tags],
        }
        return {key: value for key, value in lists.items() if value}

    # -- datasets --------------------------------------------------------------------------------------------------
    def api_StartBlobUpload(self, body):
        token = f"blob{len(self.state.uploads) + 1}"
        self.state.uploads[token] = {"fileName": body.get("name"), "content": None}
        return self._json(200, {"token": token, "createUrl": f"http://localhost/upload/{token}"})

    def _tree(self, files: list, directories: list, prefix: str = "") -> Optional[dict]:
        """{path: bytes} of uploaded blobs named by a request's files and directories; None if one is missing."""
        tree = {}
        for item in files or []:
            upload = self.state.uploads.get(item.get("token", ""))
            if upload is None or upload["content"] is None:
                return None
            tree[prefix + upload["fileName"]] = upload["content"]
        for directory in directories or []:
            sub = self._tree(directory.get("files"), directory.get("directories"), f"{prefix}{directory['name']}/")
            if sub is None:
                return None
            tree.update(sub)
        return tree

    def _dataset(self, body: dict, slug_key: str = "datasetSlug"):
        """The dataset a request names, after answering 404 or 403 (then None)."""
        key = (body.get("ownerSlug", ""), body.get(slug_key, ""))
        dataset = self.state.datasets.get(key)
        if dataset is None:
            self._error(404, "dataset not found")
        elif dataset.private and not self._owned(dataset.owner):
            self._error(403, "private dataset")
            return None
        return dataset

    def api_CreateDataset(self, body):
        owner, slug = body.get("ownerSlug", ""), body.get("slug", "")
        if not self._owned(owner):
            return self._error(403, f"you cannot create datasets for {owner}")
        if not 6 <= len(slug) <= 50 or not 6 <= len(body.get("title") or "") <= 50:
            return self._error(400, "slug and title must be 6 to 50 characters")
        if (owner, slug) in self.state.datasets:
            return self._json(200, {"status": "error", "error": f'The requested slug "{slug}" is already in use'})
        tree = self._tree(body.get("files"), body.get("directories"))
        if tree is None:
            return self._error(400, "a file was not uploaded")
        self.state.datasets[(owner, slug)] = StoredDataset(
            owner, slug, body["title"], bool(body.get("isPrivate")), body.get("licenseName", ""),
            body.get("description", ""), [tree], [""], list(self.state.dataset_status_script),
        )
        return self._json(200, {"ref": f"{owner}/{slug}", "url": f"https://www.kaggle.com/datasets/{owner}/{slug}",
                                "status": "ok"})

    def api_CreateDatasetVersion(self, body):
        dataset = self._dataset(body)
        if dataset is None:
            return None
        if not self._owned(dataset.owner):
            return self._error(403, "not your dataset")
        version = body.get("body") or {}
        tree = self._tree(version.get("files"), version.get("directories"))
        if tree is None:
            return self._error(400, "a file was not uploaded")
        dataset.versions.append(tree)
        dataset.notes.append(version.get("versionNotes", ""))
        if version.get("description"):
            dataset.description = version["description"]
        dataset.statuses = list(self.state.dataset_status_script)
        return self._json(200, {"ref": f"{dataset.owner}/{dataset.slug}", "status": "ok"})

    def api_GetDataset(self, body):
        dataset = self._dataset(body)
        if dataset is None:
            return None
        versions = [{"versionNumber": i + 1, "versionNotes": n} for i, n in enumerate(dataset.notes)]
        return self._json(200, {"id": 77, "ref": f"{dataset.owner}/{dataset.slug}", "title": dataset.title,
                                "description": dataset.description, "isPrivate": dataset.private,
                                "currentVersionNumber": len(dataset.versions), "versions": versions})

    def api_GetDatasetStatus(self, body):
        dataset = self._dataset(body)
        if dataset is None:
            return None
        status = dataset.statuses[0]
        if len(dataset.statuses) > 1:
            dataset.statuses.pop(0)
        return self._json(200, {"status": status})

    # -- security --------------------------------------------------------------------------------------------------
    def api_IntrospectToken(self, body):
        user = self.state.tokens.get(body.get("token", ""))
        if user is None:
            return self._json(200, {"active": False})
        return self._json(200, {"active": True, "username": user, "clientId": "kaggle-cli", "scope": "all"})


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return  # the client closed a connection it gave up on (a failed download): nothing went wrong here
        super().handle_error(request, client_address)


class StandinServer:
    """Start with ``start()``; ``url`` is the proxy URL; ``stop()`` (or the lifetime timer) ends it."""

    def __init__(self, username="alice", key="sekrit-key-0123456789", competition="deep-learning-spring-2025-project-2",
                 lifetime: float = 300.0):
        self.state = StandinState(username, key, competition)
        self.httpd = _QuietServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.state = self.state  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.timer = threading.Timer(lifetime, self.stop)
        self.timer.daemon = True
        self._stopped = False

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "StandinServer":
        self.thread.start()
        self.timer.start()
        return self

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.state.released.set()
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
