# SPDX-License-Identifier: Apache-2.0
"""The tail-sampling stage (see fasttrace/tail.py for the policy and what is kept).

Each drained SpanBatch passes through `TailStage.process`.  A row whose trace is decided
follows the decision (a C table of recent decisions); a local root is decided in C from
its row and its trace's pending summary; any other row waits in the pending table.  The
kept rows leave as one SpanBatch whose spans each carry the ``sampling.decision`` tag,
appended in C under the key id the arena interns for it.
"""
cimport cython
from cpython.list cimport PyList_GET_ITEM, PyList_New, PyList_SET_ITEM
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc

from collections import OrderedDict, deque

from fasttrace._arena cimport KEY_SAMPLING_DECISION
from fasttrace._columns cimport FMT_I32, FMT_I64, FMT_U8, FMT_U32, Column, new_column, numpy
from fasttrace._cdefs cimport ft_list_set, ft_prefetch, ft_rand64
from fasttrace._pyapi cimport PyDict_GET_SIZE
from fasttrace._layout cimport raw_column
from fasttrace._layout cimport (FLAG_CONTEXT_PARENT, FLAG_DEBUG, FLAG_FIRST_REF_FOLLOWS,
                                FLAG_SAMPLED, TAG_BOOL, TAG_STR, UNINTERNED)

from fasttrace._reentry import GuardedLock
from fasttrace.batch import SpanBatch, _gather_rows, _take

__all__ = ["DECISIONS", "TOLD_UPSTREAM", "TailStage", "pending_span_bytes"]

# the values of the sampling.decision tag, in the order the policies are tried; a
# decision's code is its position + 1 (0: discarded)
DECISIONS = ("error", "latency", "downstream", "tag", "baseline", "head", "early")
# the decisions a service tells its caller about (traceresponse): the caller keeps its
# part of the trace for them, as "downstream"; baseline and head it decides for itself
TOLD_UPSTREAM = frozenset(("error", "latency", "downstream"))

cdef enum:
    DISCARD = 0
    KEEP_ERROR = 1
    KEEP_LATENCY = 2
    KEEP_DOWNSTREAM = 3
    KEEP_TAG = 4
    KEEP_BASELINE = 5
    KEEP_HEAD = 6
    KEEP_EARLY = 7
    N_CODES = 8
    WAITING = 254       # a row's code while its trace is pending
    NO_DECISION = 255   # an empty slot of the decision table

# a candidate row's bits (from the tag columns)
cdef enum:
    ROW_ERROR = 1       # error=True
    ROW_TAG = 2         # a policy tag matches
    ROW_CHECK = 4       # an entry that only the tags dict can settle

cdef tuple _NAMES = ("",) + DECISIONS
cdef object _MISSING = object()
cdef uint8_t _EXPORTED_FLAGS = FLAG_SAMPLED | FLAG_DEBUG | FLAG_FIRST_REF_FOLLOWS

# the estimate a pending span counts against max_pending_bytes: its row and offsets, each
# tag entry (columns and list slot), each log (its row and fields dict); str values are
# not counted (the arena caps them at max_value_length)
cdef enum:
    SPAN_BYTES = 64
    TAG_BYTES = 32
    LOG_BYTES = 160


def pending_span_bytes(n_tags, n_logs):
    """What a pending span with this many tags and logs counts against the byte budget."""
    return SPAN_BYTES + TAG_BYTES * n_tags + LOG_BYTES * n_logs


cdef enum:
    PREFETCH_AHEAD = 8  # rows: about the latency of a miss to memory, in rows decided

cdef enum:
    CODE_BITS = 0xFF    # an entry's low byte holds the code, the rest the fingerprint


@cython.final
cdef class DecisionTable:
    """The last `size` decisions by trace id: open addressing with linear probing, the
    oldest entry evicted (backward-shift deletion) when a new one comes in past `size`.

    An entry is one word: a 56-bit fingerprint of the trace id (a seeded mix of its 128
    bits; two ids share one with probability 2**-56) and the code.  Eight bytes an entry
    keep the table in the cache.  The seed is random per table, so trace ids chosen by a
    caller (they come in on traceparent) cannot be made to collide."""
    cdef uint64_t *slots           # 0: empty
    cdef uint64_t *ring            # the fingerprints, in insertion order
    cdef size_t mask
    cdef uint64_t seed
    cdef int shift
    cdef Py_ssize_t size, ring_pos, ring_used

    def __cinit__(self, Py_ssize_t size):
        cdef size_t capacity = 16
        cdef int bits = 4
        while capacity < <size_t>(2 * size):
            capacity <<= 1
            bits += 1
        self.slots = <uint64_t *>calloc(capacity, sizeof(uint64_t))
        self.ring = <uint64_t *>malloc(size * sizeof(uint64_t))
        if self.slots == NULL or self.ring == NULL:
            raise MemoryError()
        self.mask = capacity - 1
        self.shift = 64 - bits
        self.seed = ft_rand64()
        self.size = size

    def __dealloc__(self):
        free(self.slots)
        free(self.ring)

    def __len__(self):
        return self.ring_used

    cdef inline uint64_t fingerprint(self, uint64_t hi, uint64_t lo) noexcept:
        cdef uint64_t x = lo ^ self.seed ^ ((hi << 29) | (hi >> 35)) * <uint64_t>0x9E3779B97F4A7C15
        x ^= x >> 32
        x *= <uint64_t>0xD6E8FEB86659FD93
        x ^= x >> 32
        x *= <uint64_t>0xD6E8FEB86659FD93
        x ^= x >> 32
        x &= ~<uint64_t>CODE_BITS
        return x if x else <uint64_t>0x100

    cdef inline size_t home(self, uint64_t fp) noexcept:
        return <size_t>(fp >> self.shift)

    cdef inline int find(self, uint64_t fp, size_t *slot) noexcept:
        """The code recorded under `fp` and its `slot`, or -1 and the free `slot`."""
        cdef size_t i = self.home(fp)
        cdef uint64_t entry = self.slots[i]
        while entry:
            if (entry & ~<uint64_t>CODE_BITS) == fp:
                slot[0] = i
                return <int>(entry & CODE_BITS)
            i = (i + 1) & self.mask
            entry = self.slots[i]
        slot[0] = i
        return -1

    cdef inline void prefetch(self, uint64_t fp) noexcept:
        """Starts loading where `fp` goes and the entry evicted then lives (both
        PREFETCH_AHEAD insertions from now)."""
        ft_prefetch(&self.slots[self.home(fp)])
        if self.ring_used == self.size:
            ft_prefetch(&self.slots[self.home(
                self.ring[(self.ring_pos + PREFETCH_AHEAD) % self.size])])

    cdef inline int get(self, uint64_t hi, uint64_t lo, size_t *slot) noexcept:
        """The code decided for (hi, lo) and its `slot`, or -1 and the free `slot` where
        put_at() goes."""
        return self.find(self.fingerprint(hi, lo), slot)

    cdef void put(self, uint64_t hi, uint64_t lo, uint8_t code) noexcept:
        cdef size_t i
        cdef uint64_t fp = self.fingerprint(hi, lo)
        if self.find(fp, &i) < 0:
            self.put_at(i, fp, code)
        else:
            self.slots[i] = (self.slots[i] & ~<uint64_t>CODE_BITS) | code

    cdef void put_at(self, size_t i, uint64_t fp, uint8_t code) noexcept:
        """Adds `fp` at the free slot find() gave for it (the table unchanged since)."""
        self.slots[i] = fp | code
        if self.ring_used == self.size:
            self.remove(self.ring[self.ring_pos])
        else:
            self.ring_used += 1
        self.ring[self.ring_pos] = fp
        self.ring_pos += 1
        if self.ring_pos == self.size:
            self.ring_pos = 0

    cdef void remove(self, uint64_t fp) noexcept:
        cdef size_t i, j, k
        if self.find(fp, &i) < 0:
            return
        j = i
        while True:
            j = (j + 1) & self.mask
            if not self.slots[j]:
                break
            k = self.home(self.slots[j] & ~<uint64_t>CODE_BITS)
            # an entry stays when its home lies cyclically in (i, j]
            if (k > i and k <= j) if i <= j else (k > i or k <= j):
                continue
            self.slots[i] = self.slots[j]
            i = j
        self.slots[i] = 0

    def record(self, hi, lo, decision):
        """Records `decision` (a name of DECISIONS, or "" for discarded) for (hi, lo)."""
        self.put(hi, lo, <uint8_t>_NAMES.index(decision))

    def lookup(self, hi, lo):
        """The decision's name ("" for discarded), or None when (hi, lo) is not here."""
        cdef size_t unused
        cdef int code = self.get(hi, lo, &unused)
        return None if code < 0 else _NAMES[code]


@cython.final
@cython.freelist(64)
cdef class _Pending:
    """One trace's spans waiting for their local root: (batch, row) pairs (batch None
    for a row of the batch being processed) and what they hold."""
    cdef list spans
    cdef bint head, error, tag
    cdef Py_ssize_t nbytes

    def __cinit__(self):
        self.spans = []


cdef inline Py_ssize_t _span_bytes(const int32_t[::1] toff, const int32_t[::1] loff,
                                   Py_ssize_t i) noexcept:
    return (SPAN_BYTES + TAG_BYTES * (toff[i + 1] - toff[i])
            + LOG_BYTES * (loff[i + 1] - loff[i]))


cdef bint _same_value(object a, object b):
    return (type(a) is bool) == (type(b) is bool) and a == b


cdef class TailStage:
    """A tracer's pending table and decisions.

    `process(batch)` takes each drained SpanBatch and returns the kept spans as one
    SpanBatch (or None).  It never waits for another thread: a batch handed in while
    another thread (or a finalizer on this one) is processing is queued, and the thread
    in the stage processes it before it leaves.
    """
    cdef readonly object policy
    cdef object _lock
    cdef object _inbox
    cdef object _pending            # (hi, lo) -> _Pending, oldest first
    cdef public object _marks       # (hi, lo) of undecided traces a callee kept
    cdef readonly DecisionTable _decided
    cdef long long kept[N_CODES]
    cdef long long traces_discarded, spans_discarded, decided_early, late_spans
    cdef long long marks_too_late
    cdef Py_ssize_t pending_spans, pending_bytes
    # the policy, read in C
    cdef bint p_errors, p_head, p_tags, p_by_op, p_all_baseline
    cdef double p_latency_ns        # < 0: off
    cdef uint64_t p_bound
    # key ids of "error" and the policy's tag keys in a batch's key table
    cdef object _keys_table
    cdef Py_ssize_t _keys_seen      # entries of _keys_table already searched
    cdef dict _key_ids
    cdef object _names_table
    cdef dict _op_latency_ns        # name id -> threshold ns (< 0: off)

    def __init__(self, policy):
        from fasttrace.tail import TailSampling
        if not isinstance(policy, TailSampling):
            raise TypeError(f"tail_sampling must be a fasttrace.TailSampling, not {policy!r}")
        self.policy = policy
        self.p_errors = policy.errors
        self.p_head = policy.keep_head_sampled
        self.p_tags = bool(policy.tags)
        self.p_by_op = bool(policy.latency_ms_by_operation)
        self.p_latency_ns = -1.0 if policy.latency_ms is None else policy.latency_ms * 1e6
        self.p_all_baseline = policy._bound >= (1 << 64)
        self.p_bound = 0 if self.p_all_baseline else policy._bound
        self._lock = GuardedLock()
        self._inbox = deque()
        self._reset()

    cdef _reset(self):
        cdef int c
        self._pending = OrderedDict()
        self._marks = OrderedDict()
        self._decided = DecisionTable(self.policy.decision_cache_size)
        self._inbox.clear()
        self._keys_table = self._names_table = None
        self._keys_seen = 0
        self._key_ids = {}
        self._op_latency_ns = {}
        for c in range(N_CODES):
            self.kept[c] = 0
        self.traces_discarded = self.spans_discarded = self.decided_early = 0
        self.late_spans = self.marks_too_late = 0
        self.pending_spans = self.pending_bytes = 0

    def reset_after_fork(self):
        """A forked child's table starts empty: the pending spans are the parent's."""
        self._lock = GuardedLock()
        self._inbox = deque()
        self._reset()

    def stats(self):
        return {"kept": {name: self.kept[code] for code, name in enumerate(DECISIONS, 1)},
                "traces_discarded": self.traces_discarded,
                "spans_discarded": self.spans_discarded,
                "traces_decided_early": self.decided_early, "late_spans": self.late_spans,
                "downstream_too_late": self.marks_too_late,
                "pending_spans": self.pending_spans, "pending_bytes": self.pending_bytes,
                "pending_traces": len(self._pending)}

    # -- what the integrations ask, on the application's threads ----------------------

    def mark_kept(self, hi, lo):
        """A service this process called kept the trace (hi, lo): its local trace is kept
        too, as "downstream", unless a policy before it keeps it.  False when the trace
        was already discarded here (counted; the mark still holds for a later local root
        of the trace here, such as a second call into this service); never waits for the
        stage."""
        decision = self._decided.lookup(hi, lo)
        if decision:
            return True
        if decision is not None:
            # discarded: counted, and kept for a later local root of the trace here
            self.marks_too_late += 1
        marks = self._marks
        marks[(hi, lo)] = None
        while len(marks) > self.policy.decision_cache_size:
            try:
                marks.popitem(last=False)
            except KeyError:       # emptied by the stage meanwhile
                break
        return decision is None

    def verdict(self, hi, lo, error, took_ns, operation_name):
        """What the stage would keep the trace (hi, lo) for if its local root, running
        `took_ns` so far, finished now: one of TOLD_UPSTREAM, or "" when none of them
        applies yet.  `error`: the caller knows the root failed (an error status)."""
        decision = self._decided.lookup(hi, lo)
        if decision in TOLD_UPSTREAM:
            return decision
        policy = self.policy
        if policy.errors:
            trace = self._pending.get((hi, lo))
            if error or (trace is not None and (<_Pending>trace).error):
                return "error"
        threshold = policy.latency_ms_by_operation.get(operation_name, policy.latency_ms)
        if threshold is not None and took_ns >= threshold * 1e6:
            return "latency"
        if (hi, lo) in self._marks:
            return "downstream"
        return ""

    # -- the stage ----------------------------------------------------------------------

    def process(self, batch):
        """The kept spans of `batch` (and of pending traces it decides) as a SpanBatch."""
        self._inbox.append(batch)
        out = []
        while self._inbox:
            lock = self._lock
            if not lock.enter(blocking=False):
                break       # the thread inside takes it from the inbox
            try:
                while self._inbox:
                    self._process_one(self._inbox.popleft(), out)
            finally:
                lock.exit()
        return _assemble(out)

    def decide_pending(self):
        """Decides every pending trace now, by its head decision (counted as early), and
        returns the kept spans as a SpanBatch or None: for close(), so no pending span
        is lost uncounted.  None, deciding nothing, while another thread is inside."""
        lock = self._lock
        if not lock.enter(blocking=False):
            return None
        out = []
        try:
            while self._inbox:
                self._process_one(self._inbox.popleft(), out)
            self._enforce_budget(out, True)
        finally:
            lock.exit()
        return _assemble(out)

    cdef _process_one(self, batch, list out):
        cdef Py_ssize_t n = len(raw_column(batch, "span_id")), i, k
        if n == 0:
            return
        cdef const uint64_t[::1] his = raw_column(batch, "trace_id_hi")
        cdef const uint64_t[::1] los = raw_column(batch, "trace_id_lo")
        cdef const uint64_t[::1] parents = raw_column(batch, "parent_id")
        cdef const uint8_t[::1] flags = raw_column(batch, "flags")
        cdef const int64_t[::1] starts = raw_column(batch, "start_ns")
        cdef const int64_t[::1] ends = raw_column(batch, "end_ns")
        cdef const int32_t[::1] toff = raw_column(batch, "tag_offsets")
        cdef const int32_t[::1] loff = raw_column(batch, "log_offsets")
        cdef const uint8_t[::1] rowbits
        cdef uint64_t hi, lo
        cdef int decided
        cdef uint8_t code, bits = 0
        cdef bint root, marked, any_waiting = False
        cdef _Pending trace
        cdef DecisionTable table = self._decided
        cdef double threshold
        cdef Column codes_arr = new_column(FMT_U8, n)
        cdef uint8_t[::1] codes = codes_arr
        candidates = self._candidates(batch)
        if candidates is not None:
            rowbits = candidates
        pending = self._pending
        marks = self._marks
        touched = []                    # traces given rows of this batch
        cdef size_t slot
        cdef Py_ssize_t first = 0
        if (candidates is None and not self.p_by_op and PyDict_GET_SIZE(pending) == 0
                and PyDict_GET_SIZE(marks) == 0):
            first = self._lone_roots(his, los, parents, flags, starts, ends, codes, n)
        for i in range(first, n):
            hi = his[i]
            lo = los[i]
            if candidates is not None:
                bits = rowbits[i]
            root = parents[i] == 0 or (flags[i] & FLAG_CONTEXT_PARENT) != 0
            decided = table.get(hi, lo, &slot)
            if decided >= 0:
                self.late_spans += 1
                code = <uint8_t>decided
                if code == DISCARD:
                    code = self._second_look(bits, root, ends[i] - starts[i],
                                             self._op_threshold(batch, i) if self.p_by_op
                                             else self.p_latency_ns,
                                             PyDict_GET_SIZE(marks) != 0 and
                                             marks.pop((hi, lo), _MISSING) is not _MISSING)
                    if code == DISCARD:
                        self.spans_discarded += 1
                    else:
                        self._overturn(hi, lo, code)
                codes[i] = code
                continue
            if not root:
                key = (hi, lo)
                found = pending.get(key)
                if found is None:
                    trace = _Pending()
                    pending[key] = trace
                else:
                    trace = <_Pending>found
                if not trace.spans or trace.spans[len(trace.spans) - 1][0] is not None:
                    touched.append(trace)
                trace.spans.append((None, i))
                trace.head = trace.head or (flags[i] & FLAG_SAMPLED) != 0
                trace.error = trace.error or (bits & ROW_ERROR) != 0
                trace.tag = trace.tag or (bits & ROW_TAG) != 0
                k = _span_bytes(toff, loff, i)
                trace.nbytes += k
                self.pending_bytes += k
                self.pending_spans += 1
                codes[i] = WAITING
                any_waiting = True
                continue
            # a local root: decide its trace
            trace = None
            if PyDict_GET_SIZE(pending):
                found = pending.pop((hi, lo), None)
                if found is not None:
                    trace = <_Pending>found
                    self.pending_spans -= len(trace.spans)
                    self.pending_bytes -= trace.nbytes
            marked = False
            if PyDict_GET_SIZE(marks):
                marked = marks.pop((hi, lo), _MISSING) is not _MISSING
            threshold = self.p_latency_ns
            if self.p_by_op:
                threshold = self._op_threshold(batch, i)
            if self.p_errors and ((bits & ROW_ERROR) or (trace is not None and trace.error)):
                code = KEEP_ERROR
            elif threshold >= 0 and <double>(ends[i] - starts[i]) >= threshold:
                code = KEEP_LATENCY
            elif marked:
                code = KEEP_DOWNSTREAM
            elif self.p_tags and ((bits & ROW_TAG) or (trace is not None and trace.tag)):
                code = KEEP_TAG
            elif self.p_all_baseline or lo < self.p_bound:
                code = KEEP_BASELINE
            elif self.p_head and ((flags[i] & FLAG_SAMPLED) or
                                  (trace is not None and trace.head)):
                code = KEEP_HEAD
            else:
                code = DISCARD
            codes[i] = code
            self._count(code, 1 + (0 if trace is None else len(trace.spans)))
            if trace is not None:
                _release(trace, code, codes, out)
            table.put(hi, lo, code)
        if any_waiting:
            self._keep_waiting(batch, codes_arr, touched)
        cdef Py_ssize_t n_out = 0
        for i in range(n):
            n_out += codes[i] != DISCARD and codes[i] != WAITING
        if n_out == n:
            out.append((batch, None, codes_arr))
        elif n_out:
            rows = []
            kept = bytearray(n_out)
            k = 0
            for i in range(n):
                if codes[i] != DISCARD and codes[i] != WAITING:
                    rows.append(i)
                    kept[k] = codes[i]
                    k += 1
            out.append((batch, rows, kept))
        self._enforce_budget(out, False)

    cdef Py_ssize_t _lone_roots(self, const uint64_t[::1] his, const uint64_t[::1] los,
                                const uint64_t[::1] parents, const uint8_t[::1] flags,
                                const int64_t[::1] starts, const int64_t[::1] ends,
                                uint8_t[::1] codes, Py_ssize_t n) noexcept:
        """The common case, rows 0.. while they are local roots and nothing is pending,
        marked or tagged for the policy: each decided in C, no object made.  Returns the
        first row it left to the general loop (n when none)."""
        cdef DecisionTable table = self._decided
        cdef Py_ssize_t i, ahead
        cdef size_t slot
        cdef int decided
        cdef uint8_t code
        cdef uint64_t lo, fp
        cdef uint64_t fps[PREFETCH_AHEAD]      # fingerprints of the rows ahead, by i % AHEAD
        cdef double threshold = self.p_latency_ns
        for i in range(min(n, PREFETCH_AHEAD)):
            fps[i] = table.fingerprint(his[i], los[i])
            table.prefetch(fps[i])
        for i in range(n):
            if parents[i] != 0 and (flags[i] & FLAG_CONTEXT_PARENT) == 0:
                return i
            fp = fps[i % PREFETCH_AHEAD]
            ahead = i + PREFETCH_AHEAD
            if ahead < n:
                fps[i % PREFETCH_AHEAD] = table.fingerprint(his[ahead], los[ahead])
                table.prefetch(fps[i % PREFETCH_AHEAD])
            lo = los[i]
            decided = table.find(fp, &slot)
            if decided >= 0:
                self.late_spans += 1
                code = <uint8_t>decided
                if code == DISCARD:
                    code = self._second_look(0, True, ends[i] - starts[i], threshold, False)
                    if code == DISCARD:
                        self.spans_discarded += 1
                    else:
                        self._overturn(his[i], lo, code)
                codes[i] = code
                continue
            if threshold >= 0 and <double>(ends[i] - starts[i]) >= threshold:
                code = KEEP_LATENCY
            elif self.p_all_baseline or lo < self.p_bound:
                code = KEEP_BASELINE
            elif self.p_head and (flags[i] & FLAG_SAMPLED):
                code = KEEP_HEAD
            else:
                code = DISCARD
            codes[i] = code
            self._count(code, 1)
            table.put_at(slot, fp, code)
        return n

    cdef uint8_t _second_look(self, uint8_t bits, bint root, int64_t took, double threshold,
                              bint marked) noexcept:
        """For a span drained after its trace was discarded here: what keeps the trace
        from this span on.  Its own error=True or policy tag; for a local root (another
        call into this service within the trace) its latency; a callee's mark since."""
        if self.p_errors and (bits & ROW_ERROR):
            return KEEP_ERROR
        if root and threshold >= 0 and <double>took >= threshold:
            return KEEP_LATENCY
        if marked:
            return KEEP_DOWNSTREAM
        if self.p_tags and (bits & ROW_TAG):
            return KEEP_TAG
        return DISCARD

    cdef inline void _count(self, uint8_t code, Py_ssize_t n_spans) noexcept:
        """A trace of `n_spans` spans decided: kept by `code`, or discarded."""
        if code:
            self.kept[code] += 1
        else:
            self.traces_discarded += 1
            self.spans_discarded += n_spans

    cdef void _overturn(self, uint64_t hi, uint64_t lo, uint8_t code) noexcept:
        """A discarded trace is kept from now on: counted once, by its latest decision
        (its spans already dropped stay counted in spans_discarded)."""
        self.traces_discarded -= 1
        self.kept[code] += 1
        self._decided.put(hi, lo, code)

    cdef _keep_waiting(self, batch, Column codes_arr, list touched):
        """The rows of `batch` still pending move to a compact batch of their own, so a
        pending span holds its own row, not the whole batch it was drained in."""
        cdef const uint8_t[::1] codes = codes_arr
        cdef Py_ssize_t i
        rows = [i for i in range(codes.shape[0]) if codes[i] == WAITING]
        if len(rows) == 0:
            return
        compact = batch.select(rows)
        where = dict(zip(rows, range(len(rows))))
        cdef _Pending trace
        cdef list spans
        cdef Py_ssize_t j
        for found in touched:
            trace = <_Pending>found
            spans = trace.spans
            for j in range(len(spans)):
                b, row = spans[j]
                if b is None:
                    spans[j] = (compact, where[row])

    cdef double _op_threshold(self, batch, Py_ssize_t i):
        """The latency threshold (ns, < 0: off) for span i's operation name."""
        table = batch.operation_names
        if table is not self._names_table:
            self._names_table = table
            self._op_latency_ns = {}
        name_id = int(raw_column(batch, "name_id")[i])
        threshold = self._op_latency_ns.get(name_id) if name_id != UNINTERNED else None
        if threshold is None:
            ms = self.policy.latency_ms_by_operation.get(batch.operation_name(i),
                                                         self.policy.latency_ms)
            threshold = -1.0 if ms is None else ms * 1e6
            if name_id != UNINTERNED:
                self._op_latency_ns[name_id] = threshold
        return threshold

    cdef _enforce_budget(self, list out, bint everything):
        policy = self.policy
        pending = self._pending
        marks = self._marks
        cdef _Pending trace
        cdef uint8_t code
        cdef bint marked
        while pending and (everything or self.pending_spans > policy.max_pending_spans
                           or self.pending_bytes > policy.max_pending_bytes
                           or len(pending) > policy.max_pending_traces):
            key, found = pending.popitem(last=False)
            trace = <_Pending>found
            self.pending_spans -= len(trace.spans)
            self.pending_bytes -= trace.nbytes
            self.decided_early += 1
            # what is known without the local root: every policy but latency
            marked = marks and marks.pop(key, _MISSING) is not _MISSING
            if self.p_errors and trace.error:
                code = KEEP_ERROR
            elif marked:
                code = KEEP_DOWNSTREAM
            elif self.p_tags and trace.tag:
                code = KEEP_TAG
            elif self.p_all_baseline or <uint64_t>key[1] < self.p_bound:
                code = KEEP_BASELINE
            elif trace.head:
                code = KEEP_EARLY
            else:
                code = DISCARD
            self._count(code, len(trace.spans))
            _release(trace, code, None, out)
            self._decided.put(key[0], key[1], code)

    cdef object _candidates(self, batch):
        """Per row, ROW_* bits from the tag columns: error=True, a policy tag (settled on
        the tags dict), or None when no row has either."""
        policy = self.policy
        wanted = []
        if self.p_errors:
            wanted.append("error")
        wanted.extend(k for k, _ in policy.tags)
        tag_key_arr = raw_column(batch, "tag_key")
        if not wanted or len(tag_key_arr) == 0:
            return None
        cdef uint32_t error_id = 0, key
        cdef bint has_error_id = False
        cdef set tag_ids = set()
        ids = self._key_ids_in(batch.tag_keys, wanted)
        if self.p_errors and "error" in ids:
            error_id = ids["error"]
            has_error_id = True
        for name, _ in policy.tags:
            if name in ids:
                tag_ids.add(ids[name])
        cdef const int32_t[::1] toff = raw_column(batch, "tag_offsets")
        cdef const uint32_t[::1] tkey = tag_key_arr
        cdef const uint8_t[::1] ttype = raw_column(batch, "tag_type")
        cdef const int64_t[::1] tnum = raw_column(batch, "tag_num")
        cdef Py_ssize_t n = len(raw_column(batch, "span_id")), i, t
        cdef bint any_bits = False, any_check = False
        cdef bint has_tag_ids = len(tag_ids) > 0
        # most batches hold none of the keys: one pass over the entries says so
        cdef bint any_hit = False
        cdef uint32_t error_or_none = error_id if has_error_id else UNINTERNED
        if has_tag_ids:
            for t in range(toff[0], toff[n]):
                key = tkey[t]
                if key == error_or_none or key == UNINTERNED or key in tag_ids:
                    any_hit = True
                    break
        else:
            # branch-free, so the compiler may compare several entries at once
            for t in range(toff[0], toff[n]):
                any_hit |= (tkey[t] == error_or_none) | (tkey[t] == UNINTERNED)
        if not any_hit:
            return None
        cdef Column bits_arr = new_column(FMT_U8, n)
        cdef uint8_t[::1] bits = bits_arr
        for i in range(n):
            bits[i] = 0
        for i in range(n):
            for t in range(toff[i], toff[i + 1]):
                key = tkey[t]
                if has_error_id and key == error_id:
                    if ttype[t] == TAG_BOOL and tnum[t] != 0:
                        bits[i] |= ROW_ERROR
                        any_bits = True
                elif key == UNINTERNED or (has_tag_ids and key in tag_ids):
                    bits[i] |= ROW_CHECK
                    any_check = True
        if any_check:
            for i in [i for i in range(n) if bits[i] & ROW_CHECK]:
                tags = batch.tags(i)
                bits[i] = 0
                if self.p_errors and tags.get("error") is True:
                    bits[i] |= ROW_ERROR
                for name, value in policy.tags:
                    if _same_value(tags.get(name, _MISSING), value):
                        bits[i] |= ROW_TAG
                        break
                any_bits = any_bits or bits[i] != 0
        return bits_arr if any_bits else None

    cdef dict _key_ids_in(self, table, list wanted):
        """{key: its id in `table`} for the `wanted` keys interned there (the table is
        append-only: only entries added since the last look are searched)."""
        if table is not self._keys_table:
            self._keys_table = table
            self._keys_seen = 0
            self._key_ids = {}
        cdef Py_ssize_t seen = self._keys_seen, size = len(table)
        if size > seen:
            for key in wanted:
                if key not in self._key_ids:
                    try:
                        self._key_ids[key] = table.index(key, seen)
                    except ValueError:
                        pass
            self._keys_seen = size
        return self._key_ids


cdef void _release(_Pending trace, uint8_t code, uint8_t[::1] codes, list out) except *:
    """A decided trace's pending rows: rows of the batch in process get `code` (in
    `codes`); earlier batches' rows, when kept, go to `out`."""
    cdef object b
    for b, row in trace.spans:
        if b is None:
            codes[<Py_ssize_t>row] = code
        elif code:
            out.append((b, [row], bytes((code,))))
    trace.spans = []


cdef Column _exported_flags(const uint8_t[::1] flags):
    """A kept batch's flags column: the exported bits of `flags`, and sampled."""
    cdef Py_ssize_t k, n = flags.shape[0]
    cdef Column out = new_column(FMT_U8, n)
    cdef uint8_t *w = <uint8_t *>out.data
    for k in range(n):
        w[k] = (flags[k] & _EXPORTED_FLAGS) | FLAG_SAMPLED
    return out


cdef object _kept_part(object batch, object rows, object codes_arr):
    """The spans of `batch` at `rows` (None: all) as a new SpanBatch with the exported
    flags, span k tagged sampling.decision = the name of codes_arr[k]."""
    cdef const uint8_t[::1] codes = codes_arr
    cdef Py_ssize_t n = len(raw_column(batch, "span_id")), m, k, r
    cdef const int32_t[::1] toff = raw_column(batch, "tag_offsets")
    cdef const uint32_t[::1] tkey = raw_column(batch, "tag_key")
    cdef list take
    # the arena's reserved entries (Arena.reserve_decision_tag): each span's last one
    if toff.shape[0] != n + 1:
        raise ValueError("inconsistent SpanBatch tag columns")
    if (type(batch.tag_obj) is not list or len(tkey) != toff[n] or toff[0] != 0
            or len(batch.tag_obj) != toff[n]):
        return _append_decisions(batch, rows, codes_arr)
    if rows is not None:
        take = rows if type(rows) is list else list(rows)
    m = n if rows is None else len(rows)
    for k in range(m):
        r = k if rows is None else take[k]
        if toff[r + 1] == toff[r] or tkey[toff[r + 1] - 1] != KEY_SAMPLING_DECISION:
            return _append_decisions(batch, rows, codes_arr)
    if rows is None:
        part = SpanBatch.__new__(SpanBatch)
        part.__dict__.update(batch.__dict__)     # this batch's lists: filled in place
        part.flags = _exported_flags(raw_column(batch, "flags"))
    else:
        part = batch.select(rows)
        part.flags |= FLAG_SAMPLED
    cdef const int32_t[::1] off = raw_column(part, "tag_offsets")
    cdef list tobj = part.tag_obj
    for k in range(m):
        ft_list_set(tobj, off[k + 1] - 1, <object>PyTuple_GET_ITEM(_NAMES, codes[k]))
    return part


cdef object _append_decisions(object batch, object rows, object codes_arr):
    """`_kept_part` for a batch without the reserved entries: the tag columns rebuilt,
    the sampling.decision entry appended to each span (one it set itself left out)."""
    part = SpanBatch.__new__(SpanBatch)
    part.__dict__.update(batch.__dict__)
    m = len(raw_column(batch, "span_id"))
    rows_arr = None
    if rows is None:
        log_off = raw_column(batch, "log_offsets")
        if int(log_off[0]) != 0 or int(log_off[m]) != len(raw_column(batch, "log_ts")):
            rows = range(m)     # logs shared with entries of other spans: compact them
    if rows is not None:
        # only for rows picked out of a batch: a batch kept or discarded whole, the
        # common case, is decided and tagged without numpy
        np = numpy()
        rows_arr = np.asarray(rows, dtype=np.intp)
        m = len(rows_arr)
        for name in SpanBatch._ROW_COLUMNS:
            setattr(part, name, getattr(batch, name)[rows_arr])
        part.extras = _take(batch.extras, rows_arr)
        offsets, src = _gather_rows(batch.log_offsets, rows_arr)
        part.log_offsets = offsets
        part.log_ts = batch.log_ts[src]
        part.log_fields = _take(batch.log_fields, src)
    part.flags = _exported_flags(raw_column(part, "flags"))
    cdef Py_ssize_t k
    cdef const uint8_t[::1] codes = codes_arr
    cdef const int32_t[::1] toff = raw_column(batch, "tag_offsets")
    cdef const uint32_t[::1] tkey = raw_column(batch, "tag_key")
    cdef const uint8_t[::1] ttype = raw_column(batch, "tag_type")
    cdef const int64_t[::1] tnum = raw_column(batch, "tag_num")
    cdef const Py_ssize_t[::1] take
    cdef list tobj = batch.tag_obj if type(batch.tag_obj) is list else list(batch.tag_obj)
    cdef Py_ssize_t r, t, total = 0, w = 0
    cdef Py_ssize_t n_src = len(raw_column(batch, "span_id"))
    if (toff.shape[0] != n_src + 1 or toff[0] < 0 or toff[n_src] > len(tobj)
            or toff[n_src] > tkey.shape[0] or toff[n_src] > ttype.shape[0]
            or toff[n_src] > tnum.shape[0]):
        raise ValueError("inconsistent SpanBatch tag columns")
    cdef bint own_decisions = False      # a span set sampling.decision itself: left out
    for t in range(toff[0], toff[n_src]):
        if tkey[t] == KEY_SAMPLING_DECISION:
            own_decisions = True
            break
    if rows_arr is not None:
        take = rows_arr
    for k in range(m):
        r = k if rows_arr is None else take[k]
        total += toff[r + 1] - toff[r] + 1
        if own_decisions:
            for t in range(toff[r], toff[r + 1]):
                if tkey[t] == KEY_SAMPLING_DECISION:
                    total -= 1
    off_arr = new_column(FMT_I32, m + 1)
    key_arr = new_column(FMT_U32, total)
    type_arr = new_column(FMT_U8, total)
    num_arr = new_column(FMT_I64, total)
    cdef int32_t[::1] off = off_arr
    cdef uint32_t[::1] nkey = key_arr
    cdef uint8_t[::1] ntype = type_arr
    cdef int64_t[::1] nnum = num_arr
    cdef list nobj = PyList_New(total)     # filled below before anything can see it
    cdef PyObject *item
    for k in range(m):
        r = k if rows_arr is None else take[k]
        off[k] = <int32_t>w
        for t in range(toff[r], toff[r + 1]):
            if own_decisions and tkey[t] == KEY_SAMPLING_DECISION:
                continue
            nkey[w] = tkey[t]
            ntype[w] = ttype[t]
            nnum[w] = tnum[t]
            item = PyList_GET_ITEM(tobj, t)
            Py_INCREF(<object>item)
            PyList_SET_ITEM(nobj, w, <object>item)
            w += 1
        nkey[w] = KEY_SAMPLING_DECISION
        ntype[w] = TAG_STR
        nnum[w] = 0
        item = PyTuple_GET_ITEM(_NAMES, codes[k])
        Py_INCREF(<object>item)
        PyList_SET_ITEM(nobj, w, <object>item)
        w += 1
    off[m] = <int32_t>w
    part.tag_offsets = off_arr
    part.tag_key = key_arr
    part.tag_type = type_arr
    part.tag_num = num_arr
    part.tag_obj = nobj
    return part


cdef object _assemble(list out):
    """Chunks [(batch, rows or None, codes)] as one SpanBatch, chunk order kept, or None."""
    if not out:
        return None
    parts = []
    cdef Py_ssize_t i = 0, n = len(out)
    while i < n:
        batch, rows, codes = out[i]
        if rows is not None and i + 1 < n and out[i + 1][0] is batch:
            # consecutive single rows of one pending batch go out together
            rows = list(rows)
            codes = bytearray(codes)
            while i + 1 < n and out[i + 1][0] is batch and out[i + 1][1] is not None:
                i += 1
                rows.extend(out[i][1])
                codes.extend(out[i][2])
        parts.append(_kept_part(batch, rows, codes))
        i += 1
    return parts[0] if len(parts) == 1 else parts[0].concat(parts)
