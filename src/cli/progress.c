/*
 * Progress of `gptq quantize`: the library's progress callback, the terminal bar, the
 * per-layer summary lines, the records behind the JSON report, and SIGINT.
 *
 * The library calls back once per quantized module (after it is done) and once at the
 * end of every decoder layer (module ""). Cancellation goes through the callback's
 * return value: the signal handler only sets a flag, the next callback returns
 * non-zero, and gptq_model_quantize() unwinds with GPTQ_ERR_CANCELLED, leaving the
 * model unquantized. That is the only way to stop the library cleanly; it never
 * polls anything itself.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* sigaction */
#endif

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gptq/gptq.h>
#include <gptq/model.h>

#include "cli.h"

#define BAR_CELLS 30

/* ---- SIGINT ------------------------------------------------------------------------ */

static volatile sig_atomic_t interrupted;
static struct sigaction old_sigint;
static int sigint_installed;

static void on_sigint(int sig)
{
    static const char msg[] = "\ngptq: stopping after the current step (Ctrl-C again "
                              "to stop at once)\n";
    (void)sig;
    interrupted = 1;
    /* write() is async-signal-safe; stdio is not. */
    if (isatty(STDERR_FILENO)) {
        ssize_t n = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)n;
    }
}

int gptq_cli_sigint_install(void)
{
    struct sigaction sa;

    /* Ignored on entry (a background job of a shell without job control, nohup):
     * leave it so; whoever started us asked for Ctrl-C not to reach us. */
    if (sigaction(SIGINT, NULL, &old_sigint) == 0 && old_sigint.sa_handler == SIG_IGN)
        return 0;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND; /* a second Ctrl-C is not caught */
    if (sigaction(SIGINT, &sa, &old_sigint) != 0)
        return -1;
    sigint_installed = 1;
    return 0;
}

void gptq_cli_sigint_restore(void)
{
    if (sigint_installed) {
        sigaction(SIGINT, &old_sigint, NULL);
        sigint_installed = 0;
    }
}

int gptq_cli_interrupted(void)
{
    return interrupted != 0;
}

/* ---- records ----------------------------------------------------------------------- */

int gptq_cli_progress_init(gptq_cli_progress *p, int32_t num_layers, FILE *bar,
                           FILE *summary)
{
    memset(p, 0, sizeof *p);
    p->bar = bar;
    p->summary = summary;
    p->num_layers = num_layers;
    p->layer_seconds = calloc(num_layers > 0 ? (size_t)num_layers : 1, sizeof(double));
    if (p->layer_seconds == NULL) {
        gptq_cli_error("out of memory");
        return -1;
    }
    return 0;
}

void gptq_cli_progress_free(gptq_cli_progress *p)
{
    free(p->mods);
    free(p->layer_seconds);
    memset(p, 0, sizeof *p);
}

static int record(gptq_cli_progress *p, const gptq_progress *pr)
{
    gptq_cli_module_stat *m;

    if (p->nmods == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 64;
        gptq_cli_module_stat *n = realloc(p->mods, cap * sizeof *n);
        if (n == NULL)
            return -1;
        p->mods = n;
        p->cap = cap;
    }
    m = &p->mods[p->nmods++];
    m->layer = pr->layer;
    snprintf(m->name, sizeof m->name, "%s", pr->module);
    m->loss = pr->loss;
    m->damp_percent = pr->damp_percent;
    m->seconds = pr->seconds;
    return 0;
}

/* ---- the bar ----------------------------------------------------------------------- */

/* Overwrite the previous bar: the new text, then blanks over what is left of the old
 * one. "\r" plus padding works on every terminal; no escape sequences needed. */
static void draw(gptq_cli_progress *p, const char *text)
{
    int n = (int)strlen(text);

    fprintf(p->bar, "\r%s", text);
    if (p->drawn > n)
        fprintf(p->bar, "%*s\r%s", p->drawn - n, "", text);
    fflush(p->bar);
    p->drawn = n;
}

static void erase(gptq_cli_progress *p)
{
    if (p->bar == NULL || p->drawn == 0)
        return;
    fprintf(p->bar, "\r%*s\r", p->drawn, "");
    fflush(p->bar);
    p->drawn = 0;
}

void gptq_cli_progress_status(gptq_cli_progress *p, const char *text)
{
    if (p->bar == NULL)
        return;
    if (text == NULL)
        erase(p);
    else
        draw(p, text);
}

static void format_eta(char *buf, size_t size, double s)
{
    long t = (long)(s + 0.5);

    if (t < 60)
        snprintf(buf, size, "%lds", t);
    else if (t < 3600)
        snprintf(buf, size, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(buf, size, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
}

static void draw_bar(gptq_cli_progress *p, const gptq_progress *pr)
{
    char cells[BAR_CELLS + 1], eta[32], line[256];
    int filled = 0, i;

    if (pr->num_steps > 0)
        filled = (int)((int64_t)BAR_CELLS * pr->step / pr->num_steps);
    if (filled > BAR_CELLS)
        filled = BAR_CELLS;
    for (i = 0; i < BAR_CELLS; i++)
        cells[i] = i < filled ? '#' : '.';
    cells[BAR_CELLS] = '\0';
    if (pr->step > 0 && pr->num_steps >= pr->step)
        format_eta(eta, sizeof eta,
                   pr->elapsed * (double)(pr->num_steps - pr->step) / (double)pr->step);
    else
        snprintf(eta, sizeof eta, "?");
    snprintf(line, sizeof line, "layer %d/%d  %-16s  [%s]  ETA %s", (int)pr->layer + 1,
             (int)pr->num_layers, pr->module[0] != '\0' ? pr->module : "done", cells, eta);
    draw(p, line);
}

/* ---- per-layer summary ------------------------------------------------------------- */

static void print_layer(gptq_cli_progress *p, const gptq_progress *pr, double seconds)
{
    double dmin = 0.0, dmax = 0.0;
    size_t i;

    fprintf(p->summary, "layer %d/%d: loss", (int)pr->layer + 1, (int)pr->num_layers);
    for (i = p->layer_first; i < p->nmods; i++) {
        const gptq_cli_module_stat *m = &p->mods[i];
        char name[64];
        gptq_cli_stem(m->name, '.', "_proj", name, sizeof name);
        fprintf(p->summary, " %s=%.4g", name, m->loss);
        if (i == p->layer_first || m->damp_percent < dmin)
            dmin = m->damp_percent;
        if (i == p->layer_first || m->damp_percent > dmax)
            dmax = m->damp_percent;
    }
    /* damp differs between modules only where a Cholesky failed and was retried. */
    if (dmin == dmax)
        fprintf(p->summary, "  damp %g", dmax);
    else
        fprintf(p->summary, "  damp %g-%g", dmin, dmax);
    fprintf(p->summary, "  %.2fs\n", seconds);
    fflush(p->summary);
}

int gptq_cli_progress_fn(void *user, const gptq_progress *pr)
{
    gptq_cli_progress *p = user;

    if (gptq_cli_interrupted() || p->failed)
        return 1;
    if (pr->module[0] != '\0') {
        if (record(p, pr) != 0) {
            erase(p);
            gptq_cli_error("out of memory");
            p->failed = 1;
            return 1;
        }
    } else {
        double seconds = pr->elapsed - p->layer_start;
        if (pr->layer >= 0 && pr->layer < p->num_layers)
            p->layer_seconds[pr->layer] = seconds;
        if (p->summary != NULL) {
            erase(p); /* the bar and the summary may share one terminal */
            print_layer(p, pr, seconds);
        }
        p->layer_start = pr->elapsed;
        p->layer_first = p->nmods;
    }
    if (p->bar != NULL)
        draw_bar(p, pr);
    return 0;
}

/* ---- the JSON report --------------------------------------------------------------- */

void gptq_cli_progress_json(FILE *f, const gptq_cli_progress *p)
{
    int32_t layer;
    size_t i;

    fputs("[", f);
    for (layer = 0; layer < p->num_layers; layer++) {
        int first = 1;
        fprintf(f, "%s{\"layer\": %d, \"seconds\": ", layer ? ", " : "", (int)layer);
        gptq_cli_json_number(f, p->layer_seconds[layer]);
        fputs(", \"modules\": {", f);
        for (i = 0; i < p->nmods; i++) {
            const gptq_cli_module_stat *m = &p->mods[i];
            if (m->layer != layer)
                continue;
            fputs(first ? "" : ", ", f);
            first = 0;
            gptq_cli_json_string(f, m->name);
            fputs(": {\"loss\": ", f);
            gptq_cli_json_number(f, m->loss);
            fputs(", \"damp_percent\": ", f);
            gptq_cli_json_number(f, m->damp_percent);
            fputs(", \"seconds\": ", f);
            gptq_cli_json_number(f, m->seconds);
            fputs("}", f);
        }
        fputs("}}", f);
    }
    fputs("]", f);
}
