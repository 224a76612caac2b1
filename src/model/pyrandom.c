/*
 * CPython's `random` module, the part the references' calibration sampling uses
 * (IST-DASLab datautils.py: random.seed(seed); random.randint(0, N - seqlen - 1) per
 * window), so that libgptq draws the very same windows:
 *
 *   random.seed(n)   init_by_array(key) with key = the 32-bit words of |n|, least
 *                    significant first ([0] for n = 0) - Modules/_randommodule.c
 *   randint(a, b)    a + _randbelow(b - a + 1), where _randbelow(n) draws
 *                    getrandbits(k), k = n.bit_length(), until the value is < n, and
 *                    getrandbits(k <= 32) is the next 32-bit output >> (32 - k)
 *
 * The generator is the reference MT19937 (Matsumoto & Nishimura, 2002).
 */
#include "model.h"

#define MT_N 624
#define MT_M 397

static void init_genrand(gptq__pyrandom *r, uint32_t s)
{
    r->mt[0] = s;
    for (int i = 1; i < MT_N; i++)
        r->mt[i] = 1812433253u * (r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) + (uint32_t)i;
    r->index = MT_N;
}

static void init_by_array(gptq__pyrandom *r, const uint32_t *key, int len)
{
    int i = 1, j = 0;
    init_genrand(r, 19650218u);
    for (int k = MT_N > len ? MT_N : len; k; k--) {
        r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1664525u)) + key[j] +
                   (uint32_t)j;
        i++;
        j++;
        if (i >= MT_N) {
            r->mt[0] = r->mt[MT_N - 1];
            i = 1;
        }
        if (j >= len)
            j = 0;
    }
    for (int k = MT_N - 1; k; k--) {
        r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1566083941u)) - (uint32_t)i;
        i++;
        if (i >= MT_N) {
            r->mt[0] = r->mt[MT_N - 1];
            i = 1;
        }
    }
    r->mt[0] = 0x80000000u;
    r->index = MT_N;
}

static uint32_t genrand(gptq__pyrandom *r)
{
    static const uint32_t mag01[2] = {0u, 0x9908b0dfu};
    uint32_t y;
    if (r->index >= MT_N) {
        int kk;
        for (kk = 0; kk < MT_N - MT_M; kk++) {
            y = (r->mt[kk] & 0x80000000u) | (r->mt[kk + 1] & 0x7fffffffu);
            r->mt[kk] = r->mt[kk + MT_M] ^ (y >> 1) ^ mag01[y & 1u];
        }
        for (; kk < MT_N - 1; kk++) {
            y = (r->mt[kk] & 0x80000000u) | (r->mt[kk + 1] & 0x7fffffffu);
            r->mt[kk] = r->mt[kk + (MT_M - MT_N)] ^ (y >> 1) ^ mag01[y & 1u];
        }
        y = (r->mt[MT_N - 1] & 0x80000000u) | (r->mt[0] & 0x7fffffffu);
        r->mt[MT_N - 1] = r->mt[MT_M - 1] ^ (y >> 1) ^ mag01[y & 1u];
        r->index = 0;
    }
    y = r->mt[r->index++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

void gptq__pyrandom_seed(gptq__pyrandom *r, uint64_t seed)
{
    uint32_t key[2];
    int len = 0;
    do {
        key[len++] = (uint32_t)(seed & 0xffffffffu);
        seed >>= 32;
    } while (seed && len < 2);
    init_by_array(r, key, len);
}

int64_t gptq__pyrandom_randint(gptq__pyrandom *r, int64_t a, int64_t b)
{
    uint64_t n = (uint64_t)(b - a) + 1u, v;
    int k = 0;
    while (k < 64 && (n >> k) != 0)
        k++; /* n.bit_length() */
    do
        v = genrand(r) >> (32 - k);
    while (v >= n);
    return a + (int64_t)v;
}
