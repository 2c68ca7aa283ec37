/* SPDX-License-Identifier: Apache-2.0
 * Wall-clock nanoseconds since the Unix epoch, for span start and finish.
 *
 * Wall clock (not monotonic), because backends line up spans from different hosts by it.
 * A span reads the clock twice, and clock_gettime costs ~25 ns on the VMs we measured
 * (a tenth of a recorded span), so on x86-64 Linux with the kernel's own clocksource
 * on the TSC we extrapolate from the TSC instead (~10 ns): every 50 ms of TSC ticks the
 * base is re-read from CLOCK_REALTIME (so NTP slews and steps are followed within 50 ms)
 * and the tick rate is re-estimated over the whole time since start (so its error, and
 * the jump at each re-read, shrink to nanoseconds).  The first 20 ms after import use
 * clock_gettime while the rate is unknown.  FASTTRACE_CLOCK=system turns this off.
 * Callers hold the GIL, so the calibration state needs no lock. */
#ifndef FT_CLOCK_H
#define FT_CLOCK_H
/* Portability (issue 6): Python.h, which every Cython module includes first, already
 * defines _GNU_SOURCE on Linux; defining it here too lets the header compile on its own
 * under -std=c99 (clock_gettime, CLOCK_MONOTONIC are POSIX, hidden by strict ISO modes).
 * macOS and the BSDs expose them by default; Windows uses its own API below. */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE 1
#endif
#include <stdint.h>

#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN   /* no winsock/rpc macros leaking into the Cython module */
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>
static inline int64_t ft_system_now_ns(void) {
    FILETIME ft;
    GetSystemTimePreciseAsFileTime(&ft);
    /* 100 ns ticks since 1601-01-01 */
    uint64_t t = ((uint64_t)ft.dwHighDateTime << 32) | ft.dwLowDateTime;
    return (int64_t)((t - 116444736000000000ULL) * 100ULL);
}
static inline int64_t ft_monotonic_ns(void) {
    static LARGE_INTEGER freq;
    LARGE_INTEGER now;
    if (freq.QuadPart == 0) QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&now);
    return (int64_t)((double)now.QuadPart * 1e9 / (double)freq.QuadPart);
}
#else
#include <time.h>
static inline int64_t ft_system_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
/* Monotonic nanoseconds, for rate limiting (immune to wall-clock steps). */
static inline int64_t ft_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
#endif

#if defined(__x86_64__) && defined(__linux__) && !defined(FASTTRACE_NO_TSC)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <x86intrin.h>

#define FT_TSC_OFF 0
#define FT_TSC_CALIBRATING 1
#define FT_TSC_READY 2
#define FT_TSC_REBASE_NS 50000000LL      /* re-read the system clock this often */
#define FT_TSC_FIRST_RATE_NS 20000000LL  /* shortest window for the first rate */

static int ft_tsc_state = FT_TSC_OFF;
static uint64_t ft_tsc_origin;       /* start of the rate window */
static int64_t ft_tsc_origin_ns;
static uint64_t ft_tsc_base;         /* last re-read */
static int64_t ft_tsc_base_ns;
static uint64_t ft_tsc_rebase_ticks;
static double ft_ns_per_tick;

/* Uses the TSC only where the kernel itself keeps time with it. */
static inline void ft_clock_init(void) {
    char source[32] = {0};
    const char *env = getenv("FASTTRACE_CLOCK");
    FILE *f;
    ft_tsc_state = FT_TSC_OFF;
    if (env && strcmp(env, "system") == 0) return;
    f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
    if (!f) return;
    if (fgets(source, sizeof source, f) == NULL) source[0] = 0;
    fclose(f);
    if (strncmp(source, "tsc", 3) != 0 || (source[3] != '\n' && source[3] != 0)) return;
    ft_tsc_origin_ns = ft_system_now_ns();
    ft_tsc_origin = __rdtsc();
    ft_tsc_state = FT_TSC_CALIBRATING;
}

static inline int64_t ft_tsc_rebase(uint64_t now_tsc) {
    int64_t now_ns = ft_system_now_ns();
    int64_t elapsed_ns = now_ns - ft_tsc_origin_ns;
    uint64_t elapsed_ticks = now_tsc - ft_tsc_origin;
    if (elapsed_ns <= 0 || elapsed_ticks == 0) {
        /* the wall clock stepped back: start a new rate window */
        ft_tsc_origin = now_tsc;
        ft_tsc_origin_ns = now_ns;
        ft_tsc_state = FT_TSC_CALIBRATING;
        return now_ns;
    }
    if (ft_tsc_state == FT_TSC_CALIBRATING && elapsed_ns < FT_TSC_FIRST_RATE_NS) return now_ns;
    ft_ns_per_tick = (double)elapsed_ns / (double)elapsed_ticks;
    ft_tsc_base = now_tsc;
    ft_tsc_base_ns = now_ns;
    ft_tsc_rebase_ticks = (uint64_t)((double)FT_TSC_REBASE_NS / ft_ns_per_tick);
    ft_tsc_state = FT_TSC_READY;
    return now_ns;
}

static inline int64_t ft_now_ns(void) {
    if (ft_tsc_state == FT_TSC_READY) {
        uint64_t t = __rdtsc();
        uint64_t dt = t - ft_tsc_base;
        if (dt < ft_tsc_rebase_ticks)
            return ft_tsc_base_ns + (int64_t)((double)dt * ft_ns_per_tick);
        return ft_tsc_rebase(t);
    }
    if (ft_tsc_state == FT_TSC_CALIBRATING) return ft_tsc_rebase(__rdtsc());
    return ft_system_now_ns();
}

static inline int ft_clock_uses_tsc(void) { return ft_tsc_state != FT_TSC_OFF; }
#else
static inline void ft_clock_init(void) {}
static inline int64_t ft_now_ns(void) { return ft_system_now_ns(); }
static inline int ft_clock_uses_tsc(void) { return 0; }
#endif
/* Monotonic nanoseconds at the kernel tick's resolution (1-4 ms on Linux), a few ns a
 * read where clock_gettime(CLOCK_MONOTONIC) costs ~25: for token buckets refilled at
 * traces per second (remote sampling's lower bounds), where a millisecond is nothing.
 * Elsewhere it is ft_monotonic_ns. */
static inline int64_t ft_coarse_monotonic_ns(void) {
#if defined(CLOCK_MONOTONIC_COARSE) && !defined(_WIN32)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
#else
    return ft_monotonic_ns();
#endif
}
#endif
