/* SPDX-License-Identifier: Apache-2.0
 * Wall-clock nanoseconds since the Unix epoch, for span start and finish.
 * Wall clock (not monotonic) because backends order spans of different hosts by it. */
#ifndef FT_CLOCK_H
#define FT_CLOCK_H
#include <stdint.h>

#if defined(_WIN32)
#include <windows.h>
static inline int64_t ft_now_ns(void) {
    FILETIME ft;
    GetSystemTimePreciseAsFileTime(&ft);
    /* 100 ns ticks since 1601-01-01 */
    uint64_t t = ((uint64_t)ft.dwHighDateTime << 32) | ft.dwLowDateTime;
    return (int64_t)((t - 116444736000000000ULL) * 100ULL);
}
#else
#include <time.h>
static inline int64_t ft_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
#endif

/* Monotonic nanoseconds, for rate limiting (immune to wall-clock steps). */
#if defined(_WIN32)
static inline int64_t ft_monotonic_ns(void) {
    static LARGE_INTEGER freq;
    LARGE_INTEGER now;
    if (freq.QuadPart == 0) QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&now);
    return (int64_t)((double)now.QuadPart * 1e9 / (double)freq.QuadPart);
}
#else
static inline int64_t ft_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
#endif
#endif
