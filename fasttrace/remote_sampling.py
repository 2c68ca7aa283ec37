# SPDX-License-Identifier: Apache-2.0
"""RemoteSampler: sampling strategies polled from a Jaeger agent or collector.

A Jaeger shop sets sampling centrally; jaeger-client's default sampler
(``RemoteControlledSampler``) polls ``GET <endpoint>?service=<name>`` and applies what it
gets.  RemoteSampler does the same from a daemon thread: the answer is parsed here into
an immutable `fasttrace._remote.Strategy`, which is installed whole (one attribute
store); the per-span decision is in C (`fasttrace._remote.RemoteSamplerCore.sample`).

The documents (the Jaeger agent's ``/sampling`` on port 5778, the collector's
``/api/sampling``, jaeger-client's parser)::

    {"strategyType": "PROBABILISTIC", "probabilisticSampling": {"samplingRate": 0.1}}
    {"strategyType": "RATE_LIMITING", "rateLimitingSampling": {"maxTracesPerSecond": 5}}
    {"strategyType": "PROBABILISTIC", "probabilisticSampling": {...},
     "operationSampling": {
        "defaultSamplingProbability": 0.01,
        "defaultLowerBoundTracesPerSecond": 0.1,
        "defaultUpperBoundTracesPerSecond": 10,
        "perOperationStrategies": [
            {"operation": "GET /health", "probabilisticSampling": {"samplingRate": 0}}]}}

The rules are jaeger-client's: ``operationSampling``, when present and not empty, wins
over ``strategyType``; a missing rate is 0.001, a missing lower bound 1/600 traces/s; a
rate limit must be in [0, 500).  ``strategyType`` may also be the legacy Thrift-JSON
numbers (0 probabilistic, 1 rate limiting), or absent when only one of
``probabilisticSampling`` / ``rateLimitingSampling`` is given (proto3 JSON leaves
default values out).  The upper bound is parsed and shown, not enforced (neither
jaeger-client nor the Go client enforce it).

An answer that cannot be fetched (refused, timed out, an HTTP status other than 200) or
used (not JSON, not such a document, a rate out of range) changes nothing: the last
good strategy stays in force (at first, probabilistic at `initial_sampling_rate`), the
failure is counted (``stats()``, and ``errors``, which ``Tracer.stats()["sampler_errors"]``
shows) and logged at most once a minute.
"""
import http.client
import json
import math
import threading
import urllib.parse

from fasttrace import _fork
from fasttrace._ratelimit import RateLimitedLog
from fasttrace._remote import RemoteSamplerCore, Strategy
from fasttrace._version import __version__

__all__ = ["DEFAULT_ENDPOINT", "RemoteSampler", "StrategyError", "parse_strategy"]

DEFAULT_ENDPOINT = "http://localhost:5778/sampling"
DEFAULT_SAMPLING_PROBABILITY = 0.001     # jaeger-client's defaults, for missing fields
DEFAULT_LOWER_BOUND = 1.0 / 600.0
MAX_RATE_LIMIT = 500.0                   # jaeger-client accepts [0, 500)
MAX_RESPONSE_BYTES = 1 << 20
_TYPES = {"PROBABILISTIC": "probabilistic", "RATE_LIMITING": "rate_limiting",
          0: "probabilistic", 1: "rate_limiting"}


class StrategyError(ValueError):
    """A sampling document that is not one the endpoint is supposed to send."""


def _number(obj, key, default, lo=0.0, hi=None, hi_open=False):
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StrategyError(f"{key} is not a number: {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < lo or (hi is not None and (
            value >= hi if hi_open else value > hi)):
        raise StrategyError(f"{key} out of range: {value!r}")
    return value


def _object(obj, key):
    """obj[key] as a dict; {} when missing, null or empty (jaeger-client's `if not`)."""
    value = obj.get(key)
    if not value:
        return {}
    if not isinstance(value, dict):
        raise StrategyError(f"{key} is not an object: {value!r}")
    return value


def _probability(strategy):
    # jaeger-client's get_sampling_probability
    return _number(_object(strategy, "probabilisticSampling"), "samplingRate",
                   DEFAULT_SAMPLING_PROBABILITY, 0.0, 1.0)


def parse_strategy(document, previous=None, max_operations=2000):
    """The Strategy a sampling document (bytes, str or the decoded dict) describes.

    `previous` (the strategy in force) keeps its token buckets where a rate did not
    change, and its learned operations.  Raises StrategyError for anything unusable.
    """
    if isinstance(document, (bytes, bytearray, str)):
        try:
            document = json.loads(document)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StrategyError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise StrategyError(f"not a JSON object: {type(document).__name__}")
    per_op = _object(document, "operationSampling")
    if per_op:
        default = _number(per_op, "defaultSamplingProbability",
                          DEFAULT_SAMPLING_PROBABILITY, 0.0, 1.0)
        lower = _number(per_op, "defaultLowerBoundTracesPerSecond", DEFAULT_LOWER_BOUND)
        upper = _number(per_op, "defaultUpperBoundTracesPerSecond", 0.0)
        entries = per_op.get("perOperationStrategies") or []
        if not isinstance(entries, list):
            raise StrategyError("perOperationStrategies is not a list")
        rates = {}
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("operation"), str):
                raise StrategyError(f"not an operation's strategy: {entry!r}")
            rates[entry["operation"]] = _probability(entry)
        return Strategy.per_operation(default, lower, upper, rates, previous,
                                      max_operations)
    kind = document.get("strategyType")
    if kind is None:
        has_p = bool(document.get("probabilisticSampling"))
        has_r = bool(document.get("rateLimitingSampling"))
        if has_p == has_r:
            raise StrategyError("no strategyType, and no one strategy to infer it from")
        kind = "PROBABILISTIC" if has_p else "RATE_LIMITING"
    try:
        name = _TYPES.get(kind)
    except TypeError:       # unhashable
        name = None
    if name is None or isinstance(kind, bool):
        raise StrategyError(f"unsupported strategyType: {kind!r}")
    if name == "probabilistic":
        return Strategy.probabilistic(_probability(document))
    mtps = _number(_object(document, "rateLimitingSampling"), "maxTracesPerSecond",
                   DEFAULT_LOWER_BOUND, 0.0, MAX_RATE_LIMIT, hi_open=True)
    return Strategy.rate_limiting(mtps, previous)


class RemoteSampler(RemoteSamplerCore):
    """Samples by the strategy a Jaeger sampling endpoint serves, polled in the background.

    Args:
        service_name: the service whose strategy to ask for (``?service=``).
        endpoint: the sampling URL (the agent's ``http://localhost:5778/sampling``, or a
            collector's ``http://collector:14268/api/sampling``).
        polling_interval: seconds between polls (the first starts at once, in the
            background: construction never waits for it).
        initial_sampling_rate: the probabilistic rate until the first good answer.
        max_operations: how many operations get a strategy of their own; decisions for
            operations beyond that use the default probability (counted in
            ``stats()["operations_over_limit"]``).
        timeout: seconds one poll may take.
        start: False to poll only through ``poll_now()`` (no thread).

    ``close()`` (the tracer's close calls it) stops the thread.  In a forked child the
    thread is started again by the child's first sampling decision (or ``poll_now``).
    """

    def __init__(self, service_name, endpoint=DEFAULT_ENDPOINT, polling_interval=60.0,
                 initial_sampling_rate=0.001, max_operations=2000, timeout=5.0, start=True):
        super().__init__(initial_sampling_rate, max_operations)
        if not (polling_interval > 0):
            raise ValueError(f"polling_interval must be > 0, got {polling_interval}")
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {endpoint!r}")
        parts.port  # noqa: B018 - validates the port
        self.service_name = str(service_name)
        self.endpoint = endpoint
        self.polling_interval = float(polling_interval)
        self.timeout = float(timeout)
        query = urllib.parse.urlencode({"service": self.service_name})
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        path = parts.path or "/"
        self._target = f"{path}?{parts.query}&{query}" if parts.query else f"{path}?{query}"
        self._background = bool(start)
        self.polls = 0
        self.updates = 0
        self.poll_errors = {"unreachable": 0, "http_status": 0, "invalid": 0}
        self._log = RateLimitedLog(interval=60.0)
        self._closed = False
        self._thread = None
        self._init_sync()
        _fork.register(self)
        if self._background:
            self._start_thread()

    # -- polling ------------------------------------------------------------------------

    def poll_now(self):
        """Polls once, in the calling thread.  Returns True when the answer was good (the
        strategy it describes is now in force), False otherwise (counted and logged)."""
        if self._restart_pending:
            self._restart_pending = False
            self._restart_poller()
        return self._poll()

    def wait_for_polls(self, count, timeout=None):
        """Waits until `count` polls (good or not) have finished since construction (or
        since a fork); True if they have within `timeout` seconds."""
        with self._polled:
            return self._polled.wait_for(lambda: self.polls >= count, timeout)

    def _poll(self):
        with self._poll_lock:
            try:
                ok = self._poll_once()
            except Exception:       # a bug here must not kill the thread
                self.errors += 1
                self.poll_errors["invalid"] += 1
                self._log.exception("fasttrace: remote sampling: polling %s failed",
                                    self.endpoint)
                ok = False
        with self._polled:
            self.polls += 1
            self._polled.notify_all()
        return ok

    def _poll_once(self):
        try:
            status, body = self._fetch()
        except (OSError, http.client.HTTPException) as exc:
            return self._failed("unreachable", f"{type(exc).__name__}: {exc}")
        if status != 200:
            return self._failed("http_status", f"HTTP {status}")
        try:
            strategy = parse_strategy(body, self._strategy_in_force(), self.max_operations)
        except (StrategyError, ValueError, TypeError) as exc:
            return self._failed("invalid", f"unusable answer: {exc}")
        self._install(strategy)
        self.updates += 1
        return True

    def _strategy_in_force(self):
        return self.strategy

    def _failed(self, kind, problem):
        self.errors += 1
        self.poll_errors[kind] += 1
        self._log.warning(
            "fasttrace: remote sampling: %s from %s; keeping the strategy in force (%s) "
            "(counted in stats()[\"sampler_errors\"])",
            problem, self.endpoint, self.strategy.describe())
        return False

    def _fetch(self):
        cls = http.client.HTTPSConnection if self._scheme == "https" else \
            http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self.timeout)
        try:
            conn.request("GET", self._target, headers={
                "Accept": "application/json",
                "User-Agent": f"fasttrace/{__version__}"})
            response = conn.getresponse()
            body = response.read(MAX_RESPONSE_BYTES + 1)
            if len(body) > MAX_RESPONSE_BYTES:
                raise http.client.HTTPException("answer larger than 1 MiB")
            return response.status, body
        finally:
            conn.close()

    # -- the thread ---------------------------------------------------------------------

    def _init_sync(self):
        self._poll_lock = threading.Lock()
        self._polled = threading.Condition(threading.Lock())
        self._stop = threading.Event()

    def _start_thread(self):
        if self._closed or not self._background:
            return
        stop = self._stop
        self._thread = threading.Thread(target=self._run, args=(stop,), daemon=True,
                                        name="fasttrace-remote-sampler")
        self._thread.start()

    def _run(self, stop):
        while not stop.is_set():
            self._poll()
            if stop.wait(self.polling_interval):
                return

    def _restart_poller(self):
        """(Re)starts the thread once after a fork: called by the first decision."""
        if self._thread is None or not self._thread.is_alive():
            self._start_thread()

    def _after_fork_in_child(self):
        """The fork registry (fasttrace/_fork.py) calls this in a forked child: the
        parent's thread is not here, its locks may be held; the next decision restarts."""
        self._init_sync()
        self._thread = None
        self.polls = 0
        self._restart_pending = self._background and not self._closed

    def close(self):
        """Stops polling (the strategy in force stays).  Idempotent; never waits for a
        poll in flight longer than a moment (the thread is a daemon)."""
        self._closed = True
        self._restart_pending = False
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(0.5)

    # -- reading ------------------------------------------------------------------------

    def stats(self):
        """Counters: polls, updates (good answers), errors (failed polls, all kinds),
        poll_errors by kind, operations (with a strategy of their own),
        operations_over_limit (decisions that fell back to the default), the strategy."""
        strategy = self.strategy
        return {"polls": self.polls, "updates": self.updates, "errors": self.errors,
                "poll_errors": dict(self.poll_errors),
                "operations": len(strategy.operations),
                "operations_over_limit": self.operations_over_limit,
                "strategy": strategy.describe()}

    def __repr__(self):
        return (f"RemoteSampler({self.service_name!r}, endpoint={self.endpoint!r}, "
                f"strategy={self.strategy.describe()!r})")
