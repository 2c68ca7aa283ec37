/* SPDX-License-Identifier: Apache-2.0
 * Small CPython helpers the .pyx modules cannot express. */
#ifndef FT_PYUTIL_H
#define FT_PYUTIL_H
#include <Python.h>

/* list[i] = value for an index known to be in range: the arena's object columns are
 * lists written on every tag and recycled slot, where Cython's generic item
 * assignment showed up at 7% of a span's cost. */
static inline void ft_list_set(PyObject *list, Py_ssize_t i, PyObject *value) {
    PyObject *old = PyList_GET_ITEM(list, i);
    if (old == value) return;      /* clearing an entry that is already None */
    Py_INCREF(value);
    PyList_SET_ITEM(list, i, value);
    Py_XDECREF(old);
}

/* dst[j] = src[i]; src[i] = None -- moves the reference, so draining a slot touches no
 * reference count of the values it hands over (dst[j] must hold None). */
static inline void ft_list_move(PyObject *dst, Py_ssize_t j, PyObject *src, Py_ssize_t i) {
    PyObject *v = PyList_GET_ITEM(src, i);
    PyObject *old = PyList_GET_ITEM(dst, j);
    if (v == old) return;          /* both None */
    PyList_SET_ITEM(dst, j, v);
    PyList_SET_ITEM(src, i, old);  /* the None dst held */
}

/* list[a], list[b] = list[b], list[a] for indices known to be in range: no reference
 * count changes hands. */
static inline void ft_list_swap(PyObject *list, Py_ssize_t a, Py_ssize_t b) {
    PyObject *v = PyList_GET_ITEM(list, a);
    PyList_SET_ITEM(list, a, PyList_GET_ITEM(list, b));
    PyList_SET_ITEM(list, b, v);
}

/* The fields of a log as recorded, from an exact dict: a copy (the snapshot -- the
 * caller's later changes to its dict are not the log's), made in one C call, and
 * checked field by field on the copy, which nothing else can reach (a collection that
 * runs while the copy is allocated may run finalizers that change the caller's dict;
 * the check still sees what is recorded).  *plain = 1 when every field is as the
 * arena keeps it: an exact str key, and a value that is neither an exact str longer
 * than max_len (to be truncated) nor a traceback object (to become text); 0 when some
 * field needs cleaning, which the caller does reading the returned dict.  A dict copy
 * runs no Python code, except that a dict with deleted entries (or a split one) is
 * copied by inserting each key, which compares keys of equal hash with their __eq__:
 * when that raises an Exception (or memory runs out), the error is cleared and `d`
 * itself returned (*plain = 0), for the caller to read as it goes.  NULL: a
 * BaseException that is not an Exception, still set. */
static inline PyObject *ft_log_snapshot(PyObject *d, Py_ssize_t max_len, int *plain) {
    PyObject *copy = PyDict_Copy(d);
    Py_ssize_t pos = 0, n;
    PyObject *k, *v;
    *plain = 0;
    if (copy == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) return NULL;
        PyErr_Clear();
        Py_INCREF(d);
        return d;
    }
    /* the copy cannot change: its size is how many entries there are to read */
    for (n = PyDict_GET_SIZE(copy); n > 0 && PyDict_Next(copy, &pos, &k, &v); n--) {
        if (!PyUnicode_CheckExact(k)) return copy;
        if (PyUnicode_CheckExact(v)) {
            if (PyUnicode_GET_LENGTH(v) > max_len) return copy;
        } else if (PyTraceBack_Check(v)) {
            return copy;
        }
    }
    *plain = 1;
    return copy;
}

/* A hint that *p is read soon (the tail stage's decision table, probed at random
 * places); nothing where the compiler has no such builtin. */
#if defined(__GNUC__) || defined(__clang__)
#define ft_prefetch(p) __builtin_prefetch((const void *)(p))
#else
#define ft_prefetch(p) ((void)0)
#endif

/* Sleeps briefly (called without the GIL): a thread waiting for the GIL takes it, and
 * this one does not compete for it again at once -- several such waiters spinning on
 * the GIL would starve the one thread they wait for. */
#if defined(_WIN32)
#include <windows.h>
static inline void ft_yield(void) { Sleep(0); }
#else
#include <time.h>
static inline void ft_yield(void) {
    struct timespec ts = {0, 20000};    /* 20 us */
    nanosleep(&ts, NULL);
}
#endif
#endif
