# SPDX-License-Identifier: Apache-2.0
from cpython.object cimport PyObject
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from fasttrace._cdefs cimport ft_list_set

# Slot states.
cdef enum:
    SLOT_FREE = 0
    SLOT_OPEN = 1
    SLOT_FINISHED = 2

# The codes in the slot columns are the SpanBatch's (flags: the SpanContext bits and
# FLAG_FIRST_REF_FOLLOWS; tag types; UNINTERNED), see _layout.pxd.
from fasttrace._layout cimport (FLAG_FIRST_REF_FOLLOWS, TAG_BIGINT, TAG_BOOL, TAG_FLOAT,
                                TAG_INT, TAG_STR, UNINTERNED)

cdef enum:
    NO_ENTRY = -1
    KEY_SAMPLING_PRIORITY = 0     # the key table's first entry
    KEY_SAMPLING_DECISION = 1     # its second: the tail stage's tag (fasttrace/_tail.pyx)
    MAX_INTERNED_LENGTH = 256     # longer names/keys are never interned (they would live forever)


cdef class Arena:
    cdef readonly Py_ssize_t capacity
    cdef readonly Py_ssize_t tag_capacity
    cdef readonly Py_ssize_t log_capacity
    cdef readonly int max_tags
    cdef readonly int max_logs
    cdef readonly Py_ssize_t max_value_length
    cdef readonly Py_ssize_t max_interned

    # the columns: one C block (_mem, freed with the arena) and pointers into it
    cdef void *_mem
    cdef uint64_t *trace_hi
    cdef uint64_t *trace_lo
    cdef uint64_t *span_id
    cdef uint64_t *parent_id
    cdef int64_t *start_ns
    cdef int64_t *end_ns
    cdef uint32_t *name_id
    cdef uint32_t *generation
    cdef uint8_t *flags
    cdef uint8_t *state
    cdef int32_t *tag_head
    cdef uint16_t *tag_count
    cdef int32_t *log_head
    cdef uint16_t *log_count
    cdef int32_t *free_stack
    cdef Py_ssize_t free_top
    cdef int32_t *finished_ring
    cdef Py_ssize_t finished_head
    cdef readonly Py_ssize_t finished_count
    cdef list extras            # per slot: None, or a dict of rare things (references, uninterned name)

    # tag pool: singly linked chains per slot, free entries chained through tag_next
    cdef uint32_t *tag_key
    cdef uint8_t *tag_type
    cdef int64_t *tag_num
    cdef int32_t *tag_next
    cdef list tag_obj
    cdef int32_t tag_free

    # log pool, same shape; chains are newest-first and reversed when drained
    cdef int64_t *log_ts
    cdef int32_t *log_next
    cdef list log_fields
    cdef int32_t log_free

    # interning: append-only tables, so ids handed out stay valid in drained batches
    cdef dict name_ids
    cdef readonly list names
    cdef dict key_ids
    cdef readonly list keys
    # identity caches in front of the dicts: a hit needs the caller to pass the very
    # string object the table holds (string literals do), which can never be freed
    cdef PyObject *name_cache[256]
    cdef uint32_t name_cache_id[256]
    cdef PyObject *key_cache[256]
    cdef uint32_t key_cache_id[256]

    cdef int fork_gen
    cdef readonly object pid

    # Where finished spans go (set by the tracer): the arena calls batch_ready() once
    # notify_every finished spans wait, and when it is full, drains as many as room()
    # says and hands them to deliver(columns).  (The data goes one way: spans -> arena
    # -> these; the arena knows no tracer and no reporter.)  notify_at is the finished
    # count of the next notice: one per batch, not one per span finished until a
    # reporter's thread gets the GIL to drain.
    cdef public Py_ssize_t notify_every
    cdef public Py_ssize_t notify_at
    cdef public object batch_ready
    cdef public object room
    cdef public object deliver
    # tail sampling: each drained span gets one more tag entry, last, key
    # KEY_SAMPLING_DECISION and value None, for the tail stage to fill in place (a
    # sampling.decision the span set itself becomes that entry)
    cdef public bint reserve_decision_tag

    # counters
    cdef public uint64_t n_started
    cdef public uint64_t n_sampled
    cdef public uint64_t n_unsampled
    cdef public uint64_t n_finished
    cdef public uint64_t n_dropped_arena_full
    cdef public uint64_t n_dropped_priority
    cdef public uint64_t n_tags_dropped
    cdef public uint64_t n_logs_dropped
    cdef public uint64_t n_values_truncated
    cdef public uint64_t n_tag_pool_full
    cdef public uint64_t n_log_pool_full
    cdef public uint64_t n_unprintable
    cdef public uint64_t n_keys_truncated
    cdef public uint64_t n_bad_timestamps
    cdef public uint64_t n_abandoned
    cdef public uint64_t n_drained

    cdef int _allocate(self) except -1
    cdef void _release(self, int32_t slot, list dead) noexcept
    cdef int32_t alloc(self) except -2
    cdef int32_t open(self, uint64_t trace_hi, uint64_t trace_lo, uint64_t span_id,
                      uint64_t parent_id, int64_t start_ns, uint8_t flags,
                      str name) except -2
    cdef int32_t _alloc_making_room(self) except -2
    cdef Py_ssize_t _consumer_room(self)
    cdef int notify_batch_ready(self) noexcept
    cdef uint32_t intern_name(self, object name) except? 0xFFFFFFFE
    cdef uint32_t intern_key(self, object key) except? 0xFFFFFFFE
    cdef int set_name(self, int32_t slot, uint32_t gen, str name) except -1
    cdef int set_tag(self, int32_t slot, uint32_t gen, object key, object value) except -1
    # inline here: a log_kv makes one call less (into the C API, for its copy)
    cdef inline int add_log(self, int32_t slot, uint32_t gen, int64_t ts,
                            object fields) noexcept:
        """Records one log; `fields` must be a dict the arena may keep.  Nothing here
        runs Python code: the free entry holds None."""
        cdef int32_t i
        if self.generation[slot] != gen or self.state[slot] != SLOT_OPEN:
            return 0
        if self.log_count[slot] >= self.max_logs:
            self.n_logs_dropped += 1
            return 0
        i = self.log_free
        if i == NO_ENTRY:
            self.n_log_pool_full += 1
            return 0
        self.log_free = self.log_next[i]
        self.log_ts[i] = ts
        ft_list_set(self.log_fields, i, fields)
        self.log_next[i] = self.log_head[slot]
        self.log_head[slot] = i
        self.log_count[slot] += 1
        return 0

    cdef int set_flags(self, int32_t slot, uint32_t gen, uint8_t bits) except -1
    cdef bint finish(self, int32_t slot, uint32_t gen, int64_t end_ns) noexcept
    cdef int discard(self, int32_t slot, uint32_t gen) except -1
    cdef int abandon(self, int32_t slot, uint32_t gen) noexcept
    cdef int check_fork(self) except -1
    cdef object clean_value(self, object value)
    cdef str clean_key(self, object key)
    cdef object tag_value(self, object value, uint8_t *vtype, int64_t *num)
    cdef object _drain(self, Py_ssize_t n)


cdef str as_text(object value, Arena arena)
