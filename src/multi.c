/*
 * multi.c - the bulk engine behind carriers.add_many: many exchanges on one
 * curl multi handle, each item scheduled on its own "not before" time so a
 * backoff never stalls the others. No Lua here; the binding hands finished
 * attempts to the Lua layer, which decides retries exactly as for `add`.
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "tc.h"

/* Set up an empty run of at most `capacity` items on `concurrency` lanes.
 * b must be zeroed (it lives in a userdata whose __gc calls tc_bulk_free,
 * which copes with every partial state). Returns 0, or -1 when memory or
 * libcurl handles ran out. */
int tc_bulk_init(tc_bulk_t *b, const tc_settings_t *s, const char *url, long timeout_ms,
                 int concurrency, int capacity)
{
    b->settings = s;
    b->owner_pid = getpid();
    b->timeout_ms = timeout_ms;
    if ((b->url = strdup(url)) == NULL)
        return -1;
    if ((b->slots = calloc((size_t)concurrency, sizeof *b->slots)) == NULL)
        return -1;
    b->nslots = concurrency;
    for (int k = 0; k < b->nslots; k++) {
        tc_exchange_init(&b->slots[k].ex);
        b->slots[k].item = -1;
    }
    for (int k = 0; k < b->nslots; k++)
        if ((b->slots[k].ex.easy = curl_easy_init()) == NULL)
            return -1;
    if (capacity > 0) {
        b->items = calloc((size_t)capacity, sizeof *b->items);
        b->waiting = malloc((size_t)capacity * sizeof *b->waiting);
        if (b->items == NULL || b->waiting == NULL)
            return -1;
        b->capitems = capacity;
    }
    if ((b->multi = curl_multi_init()) == NULL)
        return -1;
    /* as many kept-alive connections as lanes, so every lane finds one */
    curl_multi_setopt(b->multi, CURLMOPT_MAXCONNECTS, (long)concurrency);
    return 0;
}

/* Queue an item (copies of body and key). Returns its index, -1 when
 * memory ran out, -2 when the run is full. */
int tc_bulk_add(tc_bulk_t *b, const char *body, size_t len, const char *key)
{
    if (b->nitems >= b->capitems)
        return -2;
    tc_bulk_item_t *it = &b->items[b->nitems];
    it->body = malloc(len + 1);
    it->key = key ? strdup(key) : NULL;
    if (it->body == NULL || (key && it->key == NULL)) {
        free(it->body);
        free(it->key);
        it->body = it->key = NULL;
        return -1;
    }
    memcpy(it->body, body, len);
    it->body[len] = '\0';
    it->body_len = len;
    it->state = TC_ITEM_FRESH;
    return b->nitems++;
}

/* Schedule another attempt of an item whose last attempt finished, no
 * earlier than `delay` seconds from now. Returns 0, or -1 when the item
 * is not waiting for a decision. */
int tc_bulk_retry(tc_bulk_t *b, int item, double delay)
{
    if (item < 0 || item >= b->nitems || b->items[item].state != TC_ITEM_IDLE)
        return -1;
    tc_bulk_item_t *it = &b->items[item];
    it->state = TC_ITEM_WAITING;
    it->not_before = tc_monotonic() + (delay > 0 ? delay : 0);
    b->waiting[b->nwaiting++] = item;
    return 0;
}

/* The server asked the whole batch to wait: start nothing for `delay`
 * seconds. Transfers already running go on. */
void tc_bulk_hold(tc_bulk_t *b, double delay)
{
    double until = tc_monotonic() + delay;
    if (until > b->hold_until)
        b->hold_until = until;
}

/* Start no item that has not started yet; started ones (and their
 * retries) finish. */
void tc_bulk_stop(tc_bulk_t *b)
{
    b->stopped = 1;
}

/* The next item to start now: the retry due longest, else the next fresh
 * item. Returns its index, or -1. */
static int pick(tc_bulk_t *b, double now)
{
    int best = -1;
    for (int k = 0; k < b->nwaiting; k++) {
        double nb = b->items[b->waiting[k]].not_before;
        if (nb <= now && (best < 0 || nb < b->items[b->waiting[best]].not_before))
            best = k;
    }
    if (best >= 0) {
        int item = b->waiting[best];
        b->waiting[best] = b->waiting[--b->nwaiting];
        return item;
    }
    if (!b->stopped && b->next_fresh < b->nitems)
        return b->next_fresh++;
    return -1;
}

/* When the next item could start (monotonic seconds), or -1 when none
 * could however long we waited, or no lane is free. */
static double next_due(const tc_bulk_t *b)
{
    if (b->running >= b->nslots)
        return -1;
    double due = -1;
    if (!b->stopped && b->next_fresh < b->nitems)
        due = 0;
    for (int k = 0; k < b->nwaiting; k++) {
        double nb = b->items[b->waiting[k]].not_before;
        if (due < 0 || nb < due)
            due = nb;
    }
    if (due >= 0 && due < b->hold_until)
        due = b->hold_until;
    return due;
}

/* Put an attempt of `item` on lane s: the request is built by the same
 * tc_exchange_prepare as `add`; the sockets are tracked by this run. */
static int start(tc_bulk_t *b, tc_bulk_slot_t *s, int item, double now)
{
    tc_bulk_item_t *it = &b->items[item];
    tc_request_t rq = { TC_POST, b->url, "", it->body, it->body_len, it->key, b->timeout_ms };
    if (tc_exchange_prepare(&s->ex, b->settings, &b->sockets, &rq) != 0)
        return -1;
    curl_easy_setopt(s->ex.easy, CURLOPT_PRIVATE, (void *)s);
    if (curl_multi_add_handle(b->multi, s->ex.easy) != CURLM_OK)
        return -1;
    s->item = item;
    s->done = 0;
    s->started = now;
    it->state = TC_ITEM_RUNNING;
    it->attempts++;
    b->running++;
    return 0;
}

/* Move finished transfers off the multi handle; returns how many. */
static int collect(tc_bulk_t *b)
{
    CURLMsg *m;
    int queued, n = 0;
    double now = tc_monotonic();
    while ((m = curl_multi_info_read(b->multi, &queued)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *easy = m->easy_handle;
        CURLcode code = m->data.result;   /* m dies with the removal below */
        tc_bulk_slot_t *s = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&s);
        s->ex.code = code;
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &s->ex.status);
        curl_multi_remove_handle(b->multi, easy);
        s->done = 1;
        s->finished = now;
        b->items[s->item].state = TC_ITEM_IDLE;
        b->running--;
        n++;
    }
    return n;
}

/* The scheduling loop: start what is due on free lanes, drive the
 * transfers, and wait (curl_multi_poll) no longer than until the next
 * item is due. Returns as soon as attempts finished. */
static int run_loop(tc_bulk_t *b, const char **why)
{
    for (;;) {
        double now = tc_monotonic();
        if (now >= b->hold_until) {
            for (int k = 0; k < b->nslots && b->running < b->nslots; k++) {
                if (b->slots[k].item >= 0)
                    continue;
                int item = pick(b, now);
                if (item < 0)
                    break;
                if (start(b, &b->slots[k], item, now) != 0) {
                    *why = "not enough memory";
                    return -1;
                }
            }
        }
        if (b->running > 0) {
            int still;
            CURLMcode mc = curl_multi_perform(b->multi, &still);
            if (mc != CURLM_OK) {
                *why = curl_multi_strerror(mc);
                return -1;
            }
            int n = collect(b);
            if (n > 0)
                return n;
        }
        double due = next_due(b);
        if (b->running == 0 && due < 0)
            return 0;
        long ms = 1000;                 /* libcurl shortens it to its own timers */
        if (due >= 0) {
            double d = ceil((due - tc_monotonic()) * 1000.0);
            ms = d <= 0 ? 0 : d < 1000 ? (long)d : 1000;
        }
        if (ms > 0) {
            CURLMcode mc = curl_multi_poll(b->multi, NULL, 0, (int)ms, NULL);
            if (mc != CURLM_OK) {
                *why = curl_multi_strerror(mc);
                return -1;
            }
        }
    }
}

/* Run until at least one attempt finished. Lanes whose outcome was handed
 * out by the previous call are freed first. Returns the number of
 * finished lanes (slots with done set), 0 when every item has settled or
 * can no longer start, or -1 with *why. Never touches Lua, never raises;
 * SIGPIPE is held off while libcurl runs. */
int tc_bulk_run(tc_bulk_t *b, const char **why)
{
    if (b->multi == NULL) {
        *why = "the bulk run is closed";
        return -1;
    }
    if (b->owner_pid != getpid()) {
        *why = "a bulk run cannot continue in a forked process";
        return -1;
    }
    for (int k = 0; k < b->nslots; k++) {
        if (b->slots[k].done) {
            b->slots[k].done = 0;
            b->slots[k].item = -1;
        }
    }
    tc_sigpipe_t guard;
    tc_sigpipe_block(&guard);
    int n = run_loop(b, why);
    tc_sigpipe_restore(&guard);
    return n;
}

/* Free everything; safe twice and on any partial state. In a forked child
 * the run's inherited sockets are disowned first. */
void tc_bulk_free(tc_bulk_t *b)
{
    if (b->owner_pid != 0 && b->owner_pid != getpid())
        tc_sockets_disown(&b->sockets);
    tc_sigpipe_t guard;
    tc_sigpipe_block(&guard);
    for (int k = 0; k < b->nslots; k++) {
        tc_bulk_slot_t *s = &b->slots[k];
        if (s->ex.easy != NULL) {
            if (b->multi != NULL && s->item >= 0 && !s->done)
                curl_multi_remove_handle(b->multi, s->ex.easy);
            curl_easy_cleanup(s->ex.easy);
            s->ex.easy = NULL;
        }
        tc_exchange_free(&s->ex);
    }
    if (b->multi != NULL)
        curl_multi_cleanup(b->multi);
    tc_sigpipe_restore(&guard);
    b->multi = NULL;
    b->running = 0;
    b->sockets.n = 0;
    for (int i = 0; i < b->nitems; i++) {
        free(b->items[i].body);
        free(b->items[i].key);
    }
    free(b->items);
    free(b->waiting);
    free(b->slots);
    free(b->url);
    b->items = NULL;
    b->waiting = NULL;
    b->slots = NULL;
    b->url = NULL;
    b->nitems = b->capitems = b->nwaiting = b->nslots = 0;
}
