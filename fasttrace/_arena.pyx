# SPDX-License-Identifier: Apache-2.0
"""The span arena: preallocated C columns that spans are recorded into.

Layout (one row per slot, `capacity` slots):
    trace_hi, trace_lo, span_id, parent_id   uint64
    start_ns, end_ns                         int64
    name_id, generation                      uint32
    flags, state                             uint8
    tag_head, log_head                       int32   (chains in the tag / log pools)
    tag_count, log_count                     uint16
    extras                                   object  (None, or a dict of rare things)

A slot is FREE, OPEN (a span is recording into it) or FINISHED (waiting to be drained).
Span handles hold (slot, generation); every write checks both, so a handle that
outlived its span can never write into the slot's next occupant.  Draining copies
finished slots into a columnar SpanBatch, bumps their generation and frees them.

Everything is bounded: slots, tag entries and log entries are preallocated; when one
runs out the write is dropped and counted, never blocking and never growing.

All methods run with the GIL held and never call back into Python code between the
state check and the mutation, so concurrent threads cannot interleave inside one.
"""
import os

cimport cython
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy
from cpython.object cimport PyObject

from fasttrace._pyapi cimport PyObject_GC_UnTrack
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.unicode cimport PyUnicode_FromObject
from cpython.list cimport PyList_GET_ITEM
from cpython.bool cimport PyBool_Check
from cpython.float cimport PyFloat_Check, PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_Check

from fasttrace._columns cimport (Block, FMT_I32, FMT_I64, FMT_U8, FMT_U32, FMT_U64,
                                 column_at, new_block)
from fasttrace._cdefs cimport ft_fork_gen, ft_rng_init, ft_list_move, ft_list_set, ft_list_swap
from fasttrace._context cimport FLAG_SAMPLED

# registers this module's pthread_atfork hook (each extension has its own copy of the
# header's static state)
ft_rng_init()


cdef list _object_column(Py_ssize_t n):
    """A list of n Nones that the garbage collector does not traverse.

    The arena's object columns hold hundreds of thousands of entries (strings, ints,
    log dicts) that are released explicitly when a slot is drained, so letting every
    full collection walk them would only add latency to the application's GC pauses.
    """
    cdef list column = [None] * n
    PyObject_GC_UnTrack(column)
    return column


# bytes per slot, tag entry and log entry in the arena's C block (see Arena._allocate)
cdef Py_ssize_t _SLOT_BYTES = (4 * sizeof(uint64_t) + 2 * sizeof(int64_t)     # ids, times
                               + 2 * sizeof(uint32_t)       # name_id, generation
                               + 4 * sizeof(int32_t)        # tag/log heads, free stack, ring
                               + 2 * sizeof(uint16_t)       # tag/log counts
                               + 2 * sizeof(uint8_t))       # flags, state
cdef Py_ssize_t _TAG_BYTES = sizeof(uint32_t) + sizeof(uint8_t) + sizeof(int64_t) + sizeof(int32_t)
cdef Py_ssize_t _LOG_BYTES = sizeof(int64_t) + sizeof(int32_t)


# Columns laid end to end whose lengths are multiples of 4 KiB (every column of a
# power-of-two capacity, and a drain's at 512 or 2048 spans) start at the same offset
# into a page, so entry i of each is in the same L1 cache set: a span touches ~20
# columns and the set has 8 ways.  A gap of 320 bytes (5 cache lines; 5 is prime to
# the 64 lines of a page) after each column starts the k-th at 64 * (5k mod 64) bytes
# into its page, a set of its own (callgrind: L1 misses per recorded span 25 -> 9).
cdef enum:
    COLUMN_GAP = 320
    ARENA_COLUMNS = 22      # the numeric columns Arena._allocate lays out
    DRAIN_COLUMNS = 14      # and Arena._drain


cdef inline char *_after(void *column, Py_ssize_t nbytes) noexcept:
    """Where the next column starts, in a block laid out with COLUMN_GAP."""
    return <char *>column + nbytes + COLUMN_GAP


cdef inline Py_ssize_t _fixed_bytes(Py_ssize_t n, Py_ssize_t nt, Py_ssize_t nl) noexcept:
    return n * _SLOT_BYTES + nt * _TAG_BYTES + nl * _LOG_BYTES + ARENA_COLUMNS * COLUMN_GAP


cdef object _unprintable(object value):
    try:
        return f"<unprintable {type(value).__name__}>"
    except BaseException:
        return "<unprintable>"


cdef str as_text(object value, Arena arena):
    """`value` as an exact str, for names, keys and text values.

    An exact str compares and hashes in C; a str subclass may run Python code there
    (its own __eq__ or __hash__), and the arena must never run Python code between its
    ownership check and its writes.  A value whose str() raises becomes a placeholder,
    counted."""
    if type(value) is str:
        return <str>value
    try:
        value = str(value)
        # str() of a str subclass may return the subclass itself; this copies it into
        # an exact str without calling anything of the subclass's
        return <str>PyUnicode_FromObject(value) if type(value) is not str else <str>value
    except Exception:
        arena.n_unprintable += 1
        return _unprintable(value)


cdef inline void _give(list dead, list column, Py_ssize_t i) noexcept:
    """column[i] = None, its object kept alive in `dead` (which must have room to grow:
    list.append only fails without memory, and then the object is freed here)."""
    cdef object value = <object>PyList_GET_ITEM(column, i)
    if value is None:
        return
    if dead is not None:
        try:
            dead.append(value)
        except BaseException:
            pass
    ft_list_set(column, i, None)


cdef inline void _swap_entries(uint32_t *key, uint8_t *vtype, int64_t *num,
                               list obj, Py_ssize_t a, Py_ssize_t b) noexcept:
    cdef uint32_t k = key[a]
    cdef uint8_t v = vtype[a]
    cdef int64_t x = num[a]
    key[a] = key[b]
    vtype[a] = vtype[b]
    num[a] = num[b]
    key[b] = k
    vtype[b] = v
    num[b] = x
    ft_list_swap(obj, a, b)


# Never cleared by the garbage collector: an open span handle that dies in the same
# collection gives its slot back (Arena.abandon), which reads the object columns; a
# cleared arena would hand it None for a list.  Nothing is lost by it: the columns are
# untracked (see _object_column), so no cycle runs through them, and the arena's other
# references (weak callbacks, names) close no cycle either.
@cython.no_gc_clear
cdef class Arena:
    def __init__(self, Py_ssize_t capacity=65536, int max_tags=128, int max_logs=128,
                 Py_ssize_t max_value_length=4096, Py_ssize_t tag_capacity=0,
                 Py_ssize_t log_capacity=0, Py_ssize_t max_interned=16384):
        if capacity < 1 or capacity > 0x7FFFFFF0:
            raise ValueError("capacity must be between 1 and 2**31 - 16")
        self.capacity = capacity
        self.max_tags = max(0, min(max_tags, 65535))
        self.max_logs = max(0, min(max_logs, 65535))
        self.max_value_length = max(1, max_value_length)
        self.max_interned = max(16, max_interned)
        # A few tags per span on average; slots in use are usually far fewer than
        # capacity because the reporter drains them continuously.
        self.tag_capacity = tag_capacity if tag_capacity > 0 else capacity * 4
        self.log_capacity = log_capacity if log_capacity > 0 else capacity
        self._allocate()
        self.name_ids = {}
        self.names = []
        self.key_ids = {"sampling.priority": KEY_SAMPLING_PRIORITY,
                        "sampling.decision": KEY_SAMPLING_DECISION}
        self.keys = ["sampling.priority", "sampling.decision"]
        self.fork_gen = ft_fork_gen()
        self.pid = os.getpid()
        self.notify_at = self.notify_every = 1 << 62
        self.room = self.deliver = self.batch_ready = None

    def __dealloc__(self):
        PyMem_Free(self._mem)
        self._mem = NULL

    cdef int _allocate(self) except -1:
        """The columns, in one zeroed C block (the 8-byte columns first, so each is
        aligned to its type)."""
        cdef Py_ssize_t n = self.capacity, nt = self.tag_capacity, nl = self.log_capacity, i
        cdef char *p = <char *>PyMem_Calloc(1, <size_t>_fixed_bytes(n, nt, nl))
        if p == NULL:
            raise MemoryError()
        PyMem_Free(self._mem)
        self._mem = p
        self.trace_hi = <uint64_t *>p; p = _after(p, n * sizeof(uint64_t))
        self.trace_lo = <uint64_t *>p; p = _after(p, n * sizeof(uint64_t))
        self.span_id = <uint64_t *>p; p = _after(p, n * sizeof(uint64_t))
        self.parent_id = <uint64_t *>p; p = _after(p, n * sizeof(uint64_t))
        self.start_ns = <int64_t *>p; p = _after(p, n * sizeof(int64_t))
        self.end_ns = <int64_t *>p; p = _after(p, n * sizeof(int64_t))
        self.tag_num = <int64_t *>p; p = _after(p, nt * sizeof(int64_t))
        self.log_ts = <int64_t *>p; p = _after(p, nl * sizeof(int64_t))
        self.name_id = <uint32_t *>p; p = _after(p, n * sizeof(uint32_t))
        self.generation = <uint32_t *>p; p = _after(p, n * sizeof(uint32_t))
        self.tag_head = <int32_t *>p; p = _after(p, n * sizeof(int32_t))
        self.log_head = <int32_t *>p; p = _after(p, n * sizeof(int32_t))
        self.free_stack = <int32_t *>p; p = _after(p, n * sizeof(int32_t))
        self.finished_ring = <int32_t *>p; p = _after(p, n * sizeof(int32_t))
        self.tag_key = <uint32_t *>p; p = _after(p, nt * sizeof(uint32_t))
        self.tag_next = <int32_t *>p; p = _after(p, nt * sizeof(int32_t))
        self.log_next = <int32_t *>p; p = _after(p, nl * sizeof(int32_t))
        self.tag_count = <uint16_t *>p; p = _after(p, n * sizeof(uint16_t))
        self.log_count = <uint16_t *>p; p = _after(p, n * sizeof(uint16_t))
        self.flags = <uint8_t *>p; p = _after(p, n * sizeof(uint8_t))
        self.state = <uint8_t *>p; p = _after(p, n * sizeof(uint8_t))
        self.tag_type = <uint8_t *>p
        for i in range(n):
            self.tag_head[i] = NO_ENTRY
            self.log_head[i] = NO_ENTRY
        self.extras = _object_column(n)
        # the free stack pops the lowest slot first, which keeps hot slots in cache
        for i in range(n):
            self.free_stack[i] = <int32_t>(n - 1 - i)
        self.free_top = n
        self.finished_head = 0
        self.finished_count = 0

        self.tag_obj = _object_column(nt)
        for i in range(nt - 1):
            self.tag_next[i] = <int32_t>(i + 1)
        self.tag_next[nt - 1] = NO_ENTRY
        self.tag_free = 0

        self.log_fields = _object_column(nl)
        for i in range(nl - 1):
            self.log_next[i] = <int32_t>(i + 1)
        self.log_next[nl - 1] = NO_ENTRY
        self.log_free = 0
        return 0

    # -- sizes, for stats() and the memory benchmark ----------------------------------

    @property
    def slot_bytes(self):
        """Bytes of arena memory one slot takes (fixed columns and its bookkeeping)."""
        return _SLOT_BYTES + sizeof(void*)      # + the extras pointer

    @property
    def tag_bytes(self):
        """Bytes of arena memory one tag-pool entry takes."""
        return _TAG_BYTES + sizeof(void*)

    @property
    def total_bytes(self):
        return (_fixed_bytes(self.capacity, self.tag_capacity, self.log_capacity)
                + sizeof(void*) * (self.capacity + self.tag_capacity + self.log_capacity))

    @property
    def open_count(self):
        return self.capacity - self.free_top - self.finished_count

    # -- fork ----------------------------------------------------------------------

    cdef int check_fork(self) except -1:
        """Empties the arena in a forked child (the parent reports its own spans)."""
        if self.fork_gen == ft_fork_gen():
            return 0
        self.fork_gen = ft_fork_gen()
        self.reset_after_fork()
        return 0

    def reset_if_forked(self):
        """check_fork() for Python callers (os.register_at_fork hooks)."""
        self.check_fork()

    def reset_after_fork(self):
        """Empties the arena (a forked child: the parent reports its own spans).

        The new object columns are made first and the old ones freed last: making or
        freeing them may run a collection and finalizers, which may record spans, and
        must find the arena either as it was or reset, never in between."""
        cdef Py_ssize_t i
        new_extras = _object_column(self.capacity)
        new_tag_obj = _object_column(self.tag_capacity)
        new_log_fields = _object_column(self.log_capacity)
        # -- C only from here to the swap --
        for i in range(self.capacity):
            self.generation[i] += 1     # handles inherited from the parent go stale
            self.state[i] = SLOT_FREE
            self.tag_head[i] = NO_ENTRY
            self.log_head[i] = NO_ENTRY
            self.tag_count[i] = 0
            self.log_count[i] = 0
            self.free_stack[i] = <int32_t>(self.capacity - 1 - i)
        self.free_top = self.capacity
        self.finished_head = 0
        self.finished_count = 0
        self.notify_at = self.notify_every
        for i in range(self.tag_capacity - 1):
            self.tag_next[i] = <int32_t>(i + 1)
        self.tag_next[self.tag_capacity - 1] = NO_ENTRY
        self.tag_free = 0
        for i in range(self.log_capacity - 1):
            self.log_next[i] = <int32_t>(i + 1)
        self.log_next[self.log_capacity - 1] = NO_ENTRY
        self.log_free = 0
        # counters describe this process only
        self.n_started = self.n_sampled = self.n_unsampled = self.n_finished = 0
        self.n_dropped_arena_full = self.n_dropped_priority = 0
        self.n_tags_dropped = self.n_logs_dropped = self.n_values_truncated = 0
        self.n_tag_pool_full = self.n_log_pool_full = self.n_unprintable = self.n_drained = 0
        self.n_keys_truncated = self.n_bad_timestamps = self.n_abandoned = 0
        old_extras = self.extras
        old_tag_obj = self.tag_obj
        old_log_fields = self.log_fields
        self.extras = new_extras
        self.tag_obj = new_tag_obj
        self.log_fields = new_log_fields
        # -- end of the C-only part: the parent's objects go now --
        del old_extras, old_tag_obj, old_log_fields
        self.pid = os.getpid()

    # -- slots ---------------------------------------------------------------------

    cdef int32_t alloc(self) except -2:
        """A free slot, marked OPEN, or -1 when every slot is in use."""
        cdef int32_t slot
        if self.free_top == 0:
            return -1
        self.free_top -= 1
        slot = self.free_stack[self.free_top]
        self.state[slot] = SLOT_OPEN
        return slot

    cdef int32_t open(self, uint64_t trace_hi, uint64_t trace_lo, uint64_t span_id,
                      uint64_t parent_id, int64_t start_ns, uint8_t flags,
                      str name) except -2:
        """A slot recording a new sampled span with these fields (its generation is
        `generation[slot]`), or -1 when the arena is full (counted as arena_full)."""
        cdef int32_t slot = self.alloc()
        if slot < 0 and self.finished_count > 0:
            slot = self._alloc_making_room()
        if slot < 0:
            self.n_dropped_arena_full += 1
            return -1
        self.n_sampled += 1
        self.trace_hi[slot] = trace_hi
        self.trace_lo[slot] = trace_lo
        self.span_id[slot] = span_id
        self.parent_id[slot] = parent_id
        self.start_ns[slot] = start_ns
        self.end_ns[slot] = 0
        self.flags[slot] = flags
        self.name_id[slot] = self.intern_name(name)
        if self.name_id[slot] == UNINTERNED:
            self.set_name(slot, self.generation[slot], name)
        return slot

    cdef int32_t _alloc_making_room(self) except -2:
        """Full, but partly with finished spans: hands as many as the consumer takes
        now (its room()) to it (deliver()), and takes one of the slots that freed."""
        cdef int32_t slot = -1
        cdef Py_ssize_t room
        cdef int attempts = 0
        drained = None
        while slot < 0 and self.finished_count > 0 and attempts < 8:
            # The drain frees its slots in C, atomically, and the spans are delivered
            # after this thread took one.  Another thread may take them first while
            # this one makes the drain's columns; then slots are free anyway (and if
            # other threads filled them again, this one tries again).
            attempts += 1
            room = self._consumer_room()
            if room == 0:
                break           # the consumer is full too: the span is dropped, counted
            drained = self.drain(room)
            slot = self.alloc()
            if drained is not None:
                break
        if drained is not None and self.deliver is not None:
            try:
                self.deliver(drained)
            except Exception:
                pass        # deliver() counts and logs its own failures
        return slot

    cdef Py_ssize_t _consumer_room(self):
        """room() of the consumer: how many spans it takes now, -1 for any number."""
        if self.room is None:
            return -1
        try:
            return int(self.room())
        except Exception:
            return -1

    cdef int notify_batch_ready(self) noexcept:
        """Called by a span's finish once notify_at finished spans wait."""
        self.notify_at = self.finished_count + self.notify_every
        if self.batch_ready is not None:
            try:
                self.batch_ready()
            except BaseException:
                pass        # batch_ready() logs its own failures
        return 0

    cdef uint32_t intern_name(self, object name) except? 0xFFFFFFFE:
        cdef size_t h = (<size_t><PyObject*>name >> 4) & 255
        if self.name_cache[h] == <PyObject*>name:
            return self.name_cache_id[h]
        cdef uint32_t nid
        if len(<str>name) > MAX_INTERNED_LENGTH:
            return UNINTERNED       # kept with its span only, freed when it is drained
        cdef object found = self.name_ids.get(name)
        if found is not None:
            nid = <uint32_t>found
        elif len(self.names) >= self.max_interned:
            return UNINTERNED
        else:
            nid = <uint32_t>len(self.names)
            self.names.append(name)
            self.name_ids[name] = nid
        if self.names[nid] is name:
            self.name_cache[h] = <PyObject*>name
            self.name_cache_id[h] = nid
        return nid

    cdef uint32_t intern_key(self, object key) except? 0xFFFFFFFE:
        cdef size_t h = (<size_t><PyObject*>key >> 4) & 255
        if self.key_cache[h] == <PyObject*>key:
            return self.key_cache_id[h]
        cdef uint32_t kid
        if len(<str>key) > MAX_INTERNED_LENGTH:
            return UNINTERNED
        cdef object found = self.key_ids.get(key)
        if found is not None:
            kid = <uint32_t>found
        elif len(self.keys) >= self.max_interned:
            return UNINTERNED
        else:
            kid = <uint32_t>len(self.keys)
            self.keys.append(key)
            self.key_ids[key] = kid
        if self.keys[kid] is key:
            self.key_cache[h] = <PyObject*>key
            self.key_cache_id[h] = kid
        return kid

    cdef int set_name(self, int32_t slot, uint32_t gen, str name) except -1:
        """`name` must be an exact str (as_text)."""
        cdef uint32_t nid = self.intern_name(name)
        cdef dict fresh = None
        if nid == UNINTERNED:
            name = self.clean_value(name)
            fresh = {}      # made before the ownership check (making it may run a collection)
        if self.generation[slot] != gen or self.state[slot] != SLOT_OPEN:
            return 0
        self.name_id[slot] = nid
        extra = self.extras[slot]
        if nid == UNINTERNED:
            if extra is None:
                ft_list_set(self.extras, slot, fresh)
                extra = fresh
            (<dict>extra)["name"] = name
        elif extra is not None:
            (<dict>extra).pop("name", None)
        return 0

    cdef object clean_value(self, object value):
        """A log value as stored: strings over the length limit are truncated."""
        if type(value) is str and len(<str>value) > self.max_value_length:
            self.n_values_truncated += 1
            return (<str>value)[:self.max_value_length]
        return value

    cdef str clean_key(self, object key):
        """A tag key as stored: exact str, at most max_value_length characters (the
        truncated key is the tag's identity: setting it again replaces it)."""
        cdef str text = as_text(key, self)
        if len(text) > self.max_value_length:
            self.n_keys_truncated += 1
            return text[:self.max_value_length]
        return text

    cdef object tag_value(self, object value, uint8_t *vtype, int64_t *num):
        """Classifies a tag value without running any of its Python methods where the
        type is known (a subclass of int or float keeps its C value), and never raises:
        what cannot be read becomes a placeholder string, counted.  Returns the object
        part (None for bool, int64, float)."""
        cdef int overflow = 0
        cdef double dbl
        t = type(value)
        if t is str:
            vtype[0] = TAG_STR
            if len(<str>value) > self.max_value_length:
                self.n_values_truncated += 1
                return (<str>value)[:self.max_value_length]
            return value
        if t is bool:
            vtype[0] = TAG_BOOL
            num[0] = 1 if value is True else 0
            return None
        if t is float or (t is not int and PyFloat_Check(value)):
            vtype[0] = TAG_FLOAT
            dbl = PyFloat_AS_DOUBLE(value)
            memcpy(num, &dbl, 8)
            return None
        if t is int or PyLong_Check(value):
            num[0] = PyLong_AsLongLongAndOverflow(value, &overflow)
            if not overflow:
                vtype[0] = TAG_INT
                return None
            vtype[0] = TAG_BIGINT
            # int's own conversion: an exact copy, never the subclass's __int__
            return value if t is int else int.__int__(value)
        vtype[0] = TAG_STR
        text = as_text(value, self)
        if len(text) > self.max_value_length:
            self.n_values_truncated += 1
            return text[:self.max_value_length]
        return text

    cdef int set_tag(self, int32_t slot, uint32_t gen, object key, object value) except -1:
        cdef uint8_t vtype = TAG_STR
        cdef int64_t num = 0
        cdef int overflow = 0
        cdef object obj
        cdef uint32_t kid
        cdef int32_t i, last
        # 1. everything that may run Python code comes before the state check; after
        #    it, only exact strs and ints are compared, which runs none
        if type(key) is not str or len(<str>key) > self.max_value_length:
            key = self.clean_key(key)
        kid = self.intern_key(key)
        t = type(value)
        if t is str and len(<str>value) <= self.max_value_length:
            obj = value
        elif t is int:
            num = PyLong_AsLongLongAndOverflow(value, &overflow)
            if overflow:
                vtype = TAG_BIGINT
                obj = value
            else:
                vtype = TAG_INT
                obj = None
        else:
            obj = self.tag_value(value, &vtype, &num)   # never raises
        if kid == UNINTERNED:
            obj = (key, obj)
        # 2. the handle must still own an open slot
        if self.generation[slot] != gen or self.state[slot] != SLOT_OPEN:
            return 0
        # 3. replace the value of a key set before (OpenTracing: last write wins)
        i = self.tag_head[slot]
        last = NO_ENTRY
        while i != NO_ENTRY:
            if self.tag_key[i] == kid and (kid != UNINTERNED
                                           or <str>(<tuple>self.tag_obj[i])[0] == <str>key):
                self.tag_type[i] = vtype
                self.tag_num[i] = num
                ft_list_set(self.tag_obj, i, obj)
                return 0
            last = i
            i = self.tag_next[i]
        if self.tag_count[slot] >= self.max_tags:
            self.n_tags_dropped += 1
            return 0
        i = self.tag_free
        if i == NO_ENTRY:
            self.n_tag_pool_full += 1
            return 0
        self.tag_free = self.tag_next[i]
        self.tag_key[i] = kid
        self.tag_type[i] = vtype
        self.tag_num[i] = num
        ft_list_set(self.tag_obj, i, obj)
        self.tag_next[i] = NO_ENTRY
        if last == NO_ENTRY:
            self.tag_head[slot] = i
        else:
            self.tag_next[last] = i
        self.tag_count[slot] += 1
        return 0

    cdef bint finish(self, int32_t slot, uint32_t gen, int64_t end_ns) noexcept:
        """Marks the slot finished and queues it for draining; False if not this handle's."""
        if self.generation[slot] != gen or self.state[slot] != SLOT_OPEN:
            return False
        if end_ns < self.start_ns[slot]:
            end_ns = self.start_ns[slot]
        self.end_ns[slot] = end_ns
        self.state[slot] = SLOT_FINISHED
        self.finished_ring[(self.finished_head + self.finished_count) % self.capacity] = slot
        self.finished_count += 1
        self.n_finished += 1
        return True

    cdef void _release(self, int32_t slot, list dead) noexcept:
        """Returns a slot's tag and log entries to their pools and the slot to the free
        stack.  The objects it still holds go to `dead` (None: the caller moved them
        all out), so none is freed here: freeing one may run a finalizer, and a
        finalizer may call back into the arena (finish a span, log on it) -- it must
        find the arena whole, never a slot half released."""
        cdef int32_t i, last
        i = self.tag_head[slot]
        if i != NO_ENTRY:
            while True:
                if dead is not None:
                    _give(dead, self.tag_obj, i)
                last = i
                i = self.tag_next[i]
                if i == NO_ENTRY:
                    break
            # the chain goes back to the free list whole: its last entry links to it
            self.tag_next[last] = self.tag_free
            self.tag_free = self.tag_head[slot]
        i = self.log_head[slot]
        if i != NO_ENTRY:
            while True:
                if dead is not None:
                    _give(dead, self.log_fields, i)
                last = i
                i = self.log_next[i]
                if i == NO_ENTRY:
                    break
            self.log_next[last] = self.log_free
            self.log_free = self.log_head[slot]
        self.tag_head[slot] = NO_ENTRY
        self.log_head[slot] = NO_ENTRY
        self.tag_count[slot] = 0
        self.log_count[slot] = 0
        if dead is not None:
            _give(dead, self.extras, slot)
        self.generation[slot] += 1
        self.state[slot] = SLOT_FREE
        self.free_stack[self.free_top] = slot
        self.free_top += 1

    cdef int discard(self, int32_t slot, uint32_t gen) except -1:
        """Frees an open slot without reporting it (sampling.priority = 0)."""
        cdef list dead
        if self.generation[slot] != gen or self.state[slot] != SLOT_OPEN:
            return 0
        dead = []
        self._release(slot, dead)
        return 0            # `dead` goes here: its finalizers find the slot free

    cdef int abandon(self, int32_t slot, uint32_t gen) noexcept:
        """Frees the slot of a span whose handle died before it finished (counted)."""
        cdef list dead
        if self.generation[slot] != gen or self.state[slot] != SLOT_OPEN:
            return 0
        try:
            dead = []
        except BaseException:
            return 0        # no memory for the list: the slot stays (better than a crash)
        self._release(slot, dead)
        self.n_abandoned += 1
        return 0

    cdef int set_flags(self, int32_t slot, uint32_t gen, uint8_t bits) except -1:
        if self.generation[slot] == gen and self.state[slot] == SLOT_OPEN:
            self.flags[slot] |= bits
        return 0

    def set_extra(self, int32_t slot, uint32_t gen, str key, object value):
        cdef dict fresh = {}     # before the ownership check: making it may run a collection
        if self.generation[slot] != gen or self.state[slot] != SLOT_OPEN:
            return
        extra = self.extras[slot]
        if extra is None:
            ft_list_set(self.extras, slot, fresh)
            extra = fresh
        (<dict>extra)[key] = value

    # -- draining ------------------------------------------------------------------

    def drain(self, Py_ssize_t max_spans=-1):
        """Moves up to max_spans finished spans (all when < 0) out of the arena.

        Returns the columns of a SpanBatch as a dict keyed by its attribute names (plus
        "pid", the draining process), or None when nothing had finished.
        """
        cdef Py_ssize_t n = self.finished_count
        if max_spans >= 0 and max_spans < n:
            n = max_spans
        if n == 0:
            return None
        return self._drain(n)

    cdef object _drain(self, Py_ssize_t n):
        # Two phases.  First the output columns are made, sized for the first n finished
        # spans: allocating may run a garbage collection, whose finalizers run Python
        # code and may let other threads in -- they find every finished slot still in
        # the ring, and may drain (or finish) spans meanwhile.  Then, with no Python code
        # between the first slot taken and the last slot freed, the spans still at the
        # head of the ring move out, as many as the columns hold.  So no slot is ever
        # held while other code runs: no span start has to wait for a drain.
        cdef Py_ssize_t k, t, l, nt = 0, nl = 0, count, avail, own
        cdef int32_t slot, i
        cdef int reserve = 1 if self.reserve_decision_tag else 0
        for k in range(n):
            slot = self.finished_ring[(self.finished_head + k) % self.capacity]
            nt += self.tag_count[slot] + reserve
            nl += self.log_count[slot]

        # one block for every numeric column, the 8-byte ones first (each aligned), laid
        # out with COLUMN_GAP
        cdef Block block = new_block((6 * n + nt + nl) * 8 + (3 * n + 2 + nt) * 4 + n + nt
                                     + DRAIN_COLUMNS * COLUMN_GAP)
        cdef char *p = <char *>block.p
        cdef uint64_t *out_trace_hi = <uint64_t *>p
        cdef uint64_t *out_trace_lo = <uint64_t *>_after(out_trace_hi, n * 8)
        cdef uint64_t *out_span_id = <uint64_t *>_after(out_trace_lo, n * 8)
        cdef uint64_t *out_parent_id = <uint64_t *>_after(out_span_id, n * 8)
        cdef int64_t *out_start = <int64_t *>_after(out_parent_id, n * 8)
        cdef int64_t *out_end = <int64_t *>_after(out_start, n * 8)
        cdef int64_t *tag_num = <int64_t *>_after(out_end, n * 8)
        cdef int64_t *log_ts = <int64_t *>_after(tag_num, nt * 8)
        cdef uint32_t *out_name_id = <uint32_t *>_after(log_ts, nl * 8)
        cdef int32_t *tag_offsets = <int32_t *>_after(out_name_id, n * 4)
        cdef int32_t *log_offsets = <int32_t *>_after(tag_offsets, (n + 1) * 4)
        cdef uint32_t *tag_key = <uint32_t *>_after(log_offsets, (n + 1) * 4)
        cdef uint8_t *out_flags = <uint8_t *>_after(tag_key, nt * 4)
        cdef uint8_t *tag_type = <uint8_t *>_after(out_flags, n)
        cdef list tag_obj = [None] * nt
        cdef list log_fields = [None] * nl
        cdef list extras = [None] * n
        cdef uint64_t first_seq
        cdef object pid

        # -- from here to the end of the loop: C only --------------------------------
        avail = min(n, self.finished_count)
        first_seq = self.n_drained
        t = 0
        l = 0
        k = 0
        while k < avail:
            slot = self.finished_ring[(self.finished_head + k) % self.capacity]
            if t + self.tag_count[slot] + reserve > nt or l + self.log_count[slot] > nl:
                break       # spans that finished meanwhile, with more tags or logs
            out_trace_hi[k] = self.trace_hi[slot]
            out_trace_lo[k] = self.trace_lo[slot]
            out_span_id[k] = self.span_id[slot]
            out_parent_id[k] = self.parent_id[slot]
            out_start[k] = self.start_ns[slot]
            out_end[k] = self.end_ns[slot]
            out_flags[k] = self.flags[slot]
            out_name_id[k] = self.name_id[slot]
            tag_offsets[k] = <int32_t>t
            own = -1
            i = self.tag_head[slot]
            while i != NO_ENTRY:
                tag_key[t] = self.tag_key[i]
                tag_type[t] = self.tag_type[i]
                tag_num[t] = self.tag_num[i]
                ft_list_move(tag_obj, t, self.tag_obj, i)
                if tag_key[t] == KEY_SAMPLING_DECISION:
                    own = t
                t += 1
                i = self.tag_next[i]
            if reserve:
                if own >= 0:
                    # the span's own entry becomes the last one (the interned key is
                    # set at most once on a span, so there is only this one)
                    _swap_entries(tag_key, tag_type, tag_num, tag_obj, own, t - 1)
                else:
                    tag_key[t] = KEY_SAMPLING_DECISION
                    tag_type[t] = TAG_STR
                    tag_num[t] = 0
                    t += 1      # tag_obj[t] is None already
            # log chains are newest-first: fill this span's range from its end
            log_offsets[k] = <int32_t>l
            count = self.log_count[slot]
            i = self.log_head[slot]
            while i != NO_ENTRY:
                count -= 1
                log_ts[l + count] = self.log_ts[i]
                ft_list_move(log_fields, l + count, self.log_fields, i)
                i = self.log_next[i]
            l += self.log_count[slot]
            ft_list_move(extras, k, self.extras, slot)
            self._release(slot, None)   # every object was moved out: drops nothing
            k += 1
        tag_offsets[k] = <int32_t>t
        log_offsets[k] = <int32_t>l
        self.finished_head = (self.finished_head + k) % self.capacity
        self.finished_count -= k
        self.notify_at = self.finished_count + self.notify_every
        self.n_drained += k
        # the draining process, read before anything below allocates: a collection there
        # may fork, and a child must not take these (its parent's) spans as its own
        pid = self.pid
        # -- end of the C-only part -----------------------------------------------------
        if k == 0:
            return None     # another thread drained them while the columns were made
        if k < n:
            del extras[k:]
        if t < nt:
            del tag_obj[t:]
        if l < nl:
            del log_fields[l:]
        # under the very names of SpanBatch's attributes (fasttrace/batch.py)
        return {"trace_id_hi": column_at(block, <char *>out_trace_hi - p, FMT_U64, k),
                "trace_id_lo": column_at(block, <char *>out_trace_lo - p, FMT_U64, k),
                "span_id": column_at(block, <char *>out_span_id - p, FMT_U64, k),
                "parent_id": column_at(block, <char *>out_parent_id - p, FMT_U64, k),
                "start_ns": column_at(block, <char *>out_start - p, FMT_I64, k),
                "end_ns": column_at(block, <char *>out_end - p, FMT_I64, k),
                "flags": column_at(block, <char *>out_flags - p, FMT_U8, k),
                "name_id": column_at(block, <char *>out_name_id - p, FMT_U32, k),
                "operation_names": self.names,
                "tag_offsets": column_at(block, <char *>tag_offsets - p, FMT_I32, k + 1),
                "tag_key": column_at(block, <char *>tag_key - p, FMT_U32, t),
                "tag_type": column_at(block, <char *>tag_type - p, FMT_U8, t),
                "tag_num": column_at(block, <char *>tag_num - p, FMT_I64, t),
                "tag_obj": tag_obj, "tag_keys": self.keys,
                "log_offsets": column_at(block, <char *>log_offsets - p, FMT_I32, k + 1),
                "log_ts": column_at(block, <char *>log_ts - p, FMT_I64, l),
                "log_fields": log_fields, "extras": extras,
                "first_seq": first_seq, "source": id(self), "pid": pid}

    def counters(self):
        return {
            "started": self.n_started,
            "sampled": self.n_sampled,
            "unsampled": self.n_unsampled,
            "finished": self.n_finished,
            "drained": self.n_drained,
            "dropped": {
                "arena_full": self.n_dropped_arena_full,
                "sampling_priority": self.n_dropped_priority,
                "abandoned": self.n_abandoned,
            },
            "truncated": {
                "tags": self.n_tags_dropped,
                "logs": self.n_logs_dropped,
                "values": self.n_values_truncated,
                "tag_pool_full": self.n_tag_pool_full,
                "log_pool_full": self.n_log_pool_full,
                "unprintable": self.n_unprintable,
                "keys": self.n_keys_truncated,
                "timestamps": self.n_bad_timestamps,
            },
            "arena_capacity": self.capacity,
            "arena_open": self.open_count,
            "arena_finished": self.finished_count,
            "arena_slot_bytes": self.slot_bytes,
            "arena_tag_bytes": self.tag_bytes,
            "arena_bytes": self.total_bytes,
            "interned_names": len(self.names),
            "interned_keys": len(self.keys),
        }
