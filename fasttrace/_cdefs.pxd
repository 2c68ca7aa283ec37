# SPDX-License-Identifier: Apache-2.0
# The only file that names the C headers in src/.
from libc.stdint cimport int64_t, uint64_t, uint32_t

cdef extern from "ft_clock.h" nogil:
    void ft_clock_init()
    int64_t ft_now_ns()
    int64_t ft_system_now_ns()
    int64_t ft_monotonic_ns()
    int ft_clock_uses_tsc()

cdef extern from "ft_rand.h" nogil:
    void ft_rng_init()
    void ft_rng_seed()
    int ft_fork_gen()
    uint64_t ft_rand64()
    uint64_t ft_rand_nonzero()

cdef extern from "ft_hex.h" nogil:
    void ft_u64_to_hex(uint64_t v, char *out)
    int ft_hex_value(uint32_t c, int lower_only)

cdef extern from "ft_pyutil.h":
    bint ft_has_instance_attrs(object o) noexcept
    void ft_list_set(list lst, Py_ssize_t i, object value) noexcept
    object ft_list_get(list lst, Py_ssize_t i)
