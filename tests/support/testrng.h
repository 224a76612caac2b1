/*
 * Test support: a small deterministic generator (splitmix64) for random layers, the
 * same sequence in every test program and on every platform.
 */
#ifndef GPTQ_TEST_TESTRNG_H
#define GPTQ_TEST_TESTRNG_H

#include <stdint.h>

static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static inline float rng_uniform(uint64_t *s)
{
    return (float)((double)(rng_next(s) >> 11) * 0x1p-52 - 1.0);
}

#endif /* GPTQ_TEST_TESTRNG_H */
