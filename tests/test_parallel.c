/*
 * gptq__parallel_for and its process-wide worker pool (src/core/util.c): every index
 * is visited exactly once, in the ranges the split promises, whatever runs them: the
 * pool, fresh threads when the pool is busy (calls from several application threads at
 * once, calls from inside a worker), or a child process after fork().
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

#define MAXN 4096

typedef struct visit {
    int64_t n;
    atomic_int hits[MAXN];
    atomic_int calls;
    int nested;          /* each range also runs a nested parallel_for */
    atomic_long nested_sum;
} visit;

static void count_range(void *arg, int64_t b, int64_t e);

static void nested_range(void *arg, int64_t b, int64_t e)
{
    visit *v = arg;
    for (int64_t i = b; i < e; i++)
        atomic_fetch_add(&v->nested_sum, (long)i);
}

static void count_range(void *arg, int64_t b, int64_t e)
{
    visit *v = arg;
    atomic_fetch_add(&v->calls, 1);
    for (int64_t i = b; i < e; i++)
        atomic_fetch_add(&v->hits[i], 1);
    if (v->nested)
        gptq__parallel_for(3, 100, 1, nested_range, v);
}

/* Run one loop and check that every index was hit once and the number of ranges is
 * the one the split promises (min(threads, 256, n / min_per_thread), at least 1). */
static void check_once(int32_t threads, int64_t n, int64_t min_per_thread, int nested)
{
    visit *v = calloc(1, sizeof *v);
    int64_t parts = threads < 1 ? 1 : threads;

    cr_assert_not_null(v);
    v->n = n;
    v->nested = nested;
    gptq__parallel_for(threads, n, min_per_thread, count_range, v);
    for (int64_t i = 0; i < n; i++)
        cr_assert_eq(atomic_load(&v->hits[i]), 1, "threads %d n %lld: index %lld hit %d times",
                     threads, (long long)n, (long long)i, atomic_load(&v->hits[i]));
    if (parts > 256)
        parts = 256;
    if (parts > n / min_per_thread)
        parts = n / min_per_thread;
    if (parts < 1)
        parts = 1;
    if (n > 0) /* every range is run, empty ones included */
        cr_assert_eq(atomic_load(&v->calls), parts, "threads %d n %lld: %d calls for %lld parts",
                     threads, (long long)n, atomic_load(&v->calls), (long long)parts);
    if (nested)
        cr_assert_eq(atomic_load(&v->nested_sum), (long)atomic_load(&v->calls) * 4950);
    free(v);
}

Test(parallel, every_index_once)
{
    const int32_t threads[] = {0, 1, 2, 3, 4, 7, 16, 300};
    const int64_t ns[] = {0, 1, 2, 5, 17, 100, 1000, MAXN};
    for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++)
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
            check_once(threads[t], ns[k], 1, 0);
            check_once(threads[t], ns[k], 7, 0);
        }
}

Test(parallel, back_to_back_calls)
{
    /* Workers spinning, then asleep, then woken again. */
    for (int rep = 0; rep < 2000; rep++)
        check_once(4, 64, 1, 0);
    usleep(2000); /* past the workers' spin: they sleep on the condition variable */
    for (int rep = 0; rep < 20; rep++) {
        check_once(4, 64, 1, 0);
        usleep(500);
    }
}

Test(parallel, nested_calls)
{
    for (int rep = 0; rep < 50; rep++)
        check_once(4, 200, 1, 1);
}

static void *app_thread(void *arg)
{
    (void)arg;
    for (int rep = 0; rep < 300; rep++)
        check_once(3, 500, 1, rep % 10 == 0);
    return NULL;
}

Test(parallel, concurrent_application_threads)
{
    enum { N = 6 };
    pthread_t t[N];
    for (int i = 0; i < N; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, app_thread, NULL), 0);
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
}

Test(parallel, after_fork)
{
    pid_t pid;
    int status = 0;

    check_once(4, 1000, 1, 0); /* the parent's pool exists */
    pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        /* The child has no workers: it must start its own and not wait for the
         * parent's. A hang here fails the test by its timeout. */
        visit *v = calloc(1, sizeof *v);
        if (!v)
            _exit(3);
        v->n = 1000;
        gptq__parallel_for(4, 1000, 1, count_range, v);
        for (int i = 0; i < 1000; i++)
            if (atomic_load(&v->hits[i]) != 1)
                _exit(2);
        _exit(0);
    }
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    check_once(4, 1000, 1, 0); /* the parent's pool still works */
}
