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
