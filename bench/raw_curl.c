/*
 * raw_curl.c - the transport's limit: the carriers POST in a plain libcurl
 * loop on one kept-alive easy handle, with the same headers and body as
 * carriers.add. Usage: raw_curl URL N -> prints the seconds N POSTs took
 * (after a warm-up that opens the connection).
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>

static const char BODY[] =
    "{\"carrier_name\":\"My VoIP Provider\",\"trunk_type\":\"static_ip\","
    "\"sip_gateway\":{\"ipv4\":\"203.0.113.10\",\"port\":5060,\"inbound\":true,\"outbound\":true}}";

static size_t sink(char *p, size_t size, size_t nmemb, void *ud)
{
    (void)p;
    *(size_t *)ud += size * nmemb;
    return size * nmemb;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int post(CURL *h, struct curl_slist *base, long i)
{
    char key[64];
    snprintf(key, sizeof key, "Idempotency-Key: bench-%016lx", i);
    struct curl_slist *last = curl_slist_append(NULL, key);   /* per-request header */
    struct curl_slist *t = base;
    while (t->next) t = t->next;
    t->next = last;
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, base);
    CURLcode rc = curl_easy_perform(h);
    t->next = NULL;
    curl_slist_free_all(last);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (rc != CURLE_OK || status != 201) {
        fprintf(stderr, "raw_curl: %s, status %ld\n", curl_easy_strerror(rc), status);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: raw_curl URL N\n");
        return 2;
    }
    long n = atol(argv[2]);
    size_t got = 0;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *h = curl_easy_init();
    struct curl_slist *base = NULL;
    base = curl_slist_append(base, "Authorization: Bearer tc_test_bench0123456789");
    base = curl_slist_append(base, "Accept: application/json");
    base = curl_slist_append(base, "User-Agent: topcalls-bench/raw (libcurl)");
    base = curl_slist_append(base, "Expect:");
    base = curl_slist_append(base, "Content-Type: application/json");
    curl_easy_setopt(h, CURLOPT_URL, argv[1]);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, BODY);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(sizeof BODY - 1));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &got);
    for (long i = 0; i < 50; i++)
        if (post(h, base, -1 - i) != 0)
            return 1;
    double t0 = now();
    for (long i = 0; i < n; i++)
        if (post(h, base, i) != 0)
            return 1;
    printf("%.6f\n", now() - t0);
    curl_slist_free_all(base);
    curl_easy_cleanup(h);
    curl_global_cleanup();
    return 0;
}
