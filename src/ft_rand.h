/* SPDX-License-Identifier: Apache-2.0
 * Span and trace ids: xoshiro256** seeded from the OS (never from Python's `random`,
 * which applications reseed for their own purposes).
 *
 * Fork safety: a child must not replay the parent's sequence.  pthread_atfork's child
 * handler runs for every fork() through libc, including servers (uwsgi) that fork from C
 * without running Python's os.register_at_fork hooks; it only bumps a counter, and the
 * next draw (and the arena, which compares the same counter) notices and reseeds.
 *
 * The state is process-global: every caller holds the GIL (the extension does not declare
 * itself free-threading safe). */
#ifndef FT_RAND_H
#define FT_RAND_H
/* Portability (issue 6): as in ft_clock.h, _GNU_SOURCE (which Python.h defines first in
 * every Cython module) makes syscall() visible when the header is compiled on its own. */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE 1
#endif
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>
#include <bcrypt.h>
#if defined(_MSC_VER)
#pragma comment(lib, "bcrypt.lib")   /* MSVC links bcrypt from this; MinGW needs -lbcrypt */
#endif
#else
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/syscall.h>
#elif defined(__APPLE__)
/* getentropy: macOS >= 10.12 (wheels target >= 10.13 on x86_64, 11.0 on arm64);
 * no file descriptor to open, and no failure under sandboxing without /dev. */
#include <sys/random.h>
#define FT_HAVE_GETENTROPY 1
#elif defined(__FreeBSD__) || defined(__OpenBSD__) || defined(__NetBSD__) || defined(__DragonFly__)
#include <stdlib.h>
#define FT_HAVE_ARC4RANDOM 1
#endif
#endif

static uint64_t ft_rng_s[4];
static int ft_rng_seeded_gen = -1;        /* fork generation the state was seeded in */
static volatile int ft_fork_generation = 0; /* bumped in every forked child */

static inline uint64_t ft_rotl(const uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t ft_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Fills buf from the OS; returns 0 on success. */
static inline int ft_os_random(void *buf, size_t n) {
#if defined(_WIN32)
    return BCryptGenRandom(NULL, (PUCHAR)buf, (ULONG)n, BCRYPT_USE_SYSTEM_PREFERRED_RNG) == 0 ? 0 : -1;
#else
#if defined(__linux__) && defined(SYS_getrandom)
    if (syscall(SYS_getrandom, buf, n, 0) == (long)n) return 0;
#elif defined(FT_HAVE_GETENTROPY)
    if (n <= 256 && getentropy(buf, n) == 0) return 0;   /* 256: getentropy's limit */
#endif
#if defined(FT_HAVE_ARC4RANDOM)
    arc4random_buf(buf, n);   /* cannot fail */
    return 0;
#else
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd < 0) return -1;
    ssize_t got = read(fd, buf, n);
    close(fd);
    return got == (ssize_t)n ? 0 : -1;
#endif
#endif
}

static inline void ft_rng_seed(void) {
    uint64_t seed[4] = {0, 0, 0, 0};
    if (ft_os_random(seed, sizeof seed) != 0) {
        /* No OS entropy: mix clock, pid and an address so forks still diverge. */
        uint64_t x = (uint64_t)time(NULL) ^ ((uint64_t)(uintptr_t)&seed << 16);
#if !defined(_WIN32)
        x ^= (uint64_t)getpid() << 32;
#endif
        for (int i = 0; i < 4; i++) seed[i] = ft_splitmix64(&x);
    }
    /* splitmix the raw seed so an all-zero state (invalid for xoshiro) is impossible */
    uint64_t x = seed[0] ^ seed[1] ^ seed[2] ^ seed[3];
    for (int i = 0; i < 4; i++) ft_rng_s[i] = seed[i] ^ ft_splitmix64(&x);
    if ((ft_rng_s[0] | ft_rng_s[1] | ft_rng_s[2] | ft_rng_s[3]) == 0) ft_rng_s[0] = 1;
    ft_rng_seeded_gen = ft_fork_generation;
}

#if !defined(_WIN32)
static inline void ft_atfork_child(void) { ft_fork_generation++; }
#endif

/* Called once at module import. */
static inline void ft_rng_init(void) {
#if !defined(_WIN32)
    static int registered = 0;
    if (!registered) { pthread_atfork(NULL, NULL, ft_atfork_child); registered = 1; }
#endif
    ft_rng_seed();
}

static inline int ft_fork_gen(void) { return ft_fork_generation; }

static inline uint64_t ft_rand64(void) {
    if (ft_rng_seeded_gen != ft_fork_generation) ft_rng_seed();
    const uint64_t result = ft_rotl(ft_rng_s[1] * 5, 7) * 9;
    const uint64_t t = ft_rng_s[1] << 17;
    ft_rng_s[2] ^= ft_rng_s[0];
    ft_rng_s[3] ^= ft_rng_s[1];
    ft_rng_s[1] ^= ft_rng_s[2];
    ft_rng_s[0] ^= ft_rng_s[3];
    ft_rng_s[2] ^= t;
    ft_rng_s[3] = ft_rotl(ft_rng_s[3], 45);
    return result;
}

/* Span ids and the low half of trace ids must never be zero (W3C: all-zero is invalid). */
static inline uint64_t ft_rand_nonzero(void) {
    uint64_t v;
    do { v = ft_rand64(); } while (v == 0);
    return v;
}
#endif
