/*
 * client.c - a client's kept-alive easy handle and the sockets it holds.
 * Hosts that fork (nginx, Kamailio) copy the handle and its open sockets
 * into every child; a child must never speak on its parent's connection,
 * not even to close a TLS session, so it disowns them first.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include "tc.h"

/* Does the URL's authority (after "://", up to the path) hold an '@'? */
static int authority_has_at(const char *url)
{
    const char *p = strstr(url, "://");
    for (p = p ? p + 3 : url; *p && *p != '/' && *p != '?' && *p != '#'; p++)
        if (*p == '@')
            return 1;
    return 0;
}

/* Is a part of the parsed URL u present? */
static int has_part(CURLU *u, CURLUPart what)
{
    char *v = NULL;
    int present = curl_url_get(u, what, &v, 0) == CURLUE_OK;
    curl_free(v);
    return present;
}

/* Checks a base URL: https anywhere, plain http only to loopback (the API
 * key would otherwise cross the network in clear); no userinfo (a
 * password in a URL ends up in every log that shows it), no query or
 * fragment (paths are appended to the base: they would land inside it).
 * The reasons never quote the URL. Pure apart from libcurl's URL parser.
 * Returns 0, or -1 with *why set. */
int tc_client_check_url(const char *url, int *loopback, const char **why)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    int rc = -1;

    *why = "base_url is not a valid URL";
    if (u == NULL) {
        *why = "out of memory";
        return -1;
    }
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK
        || curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK
        || curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
        goto done;
    *loopback = tc_is_loopback_host(host);
    if (authority_has_at(url) || has_part(u, CURLUPART_USER) || has_part(u, CURLUPART_PASSWORD)
        || has_part(u, CURLUPART_OPTIONS))
        *why = "base_url must not hold a user name or password (the API key goes in api_key)";
    else if (strchr(url, '?') || has_part(u, CURLUPART_QUERY))
        *why = "base_url must not have a query ('?'): request paths are appended to it";
    else if (strchr(url, '#') || has_part(u, CURLUPART_FRAGMENT))
        *why = "base_url must not have a fragment ('#'): request paths are appended to it";
    else if (strcmp(scheme, "https") == 0 || (strcmp(scheme, "http") == 0 && *loopback))
        rc = 0;
    else if (strcmp(scheme, "http") == 0)
        *why = "base_url uses plain http to a host that is not loopback; the API key only travels over https";
    else
        *why = "base_url must be an https:// URL";
done:
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return rc;
}

/* libcurl opens every socket through here, so the table knows which
 * descriptors its connections use. CLOEXEC keeps them from programs the
 * host execs. */
static curl_socket_t on_open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    tc_sockets_t *t = ud;
    (void)purpose;
    curl_socket_t fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd != CURL_SOCKET_BAD && t->n < TC_MAX_SOCKETS)
        t->fds[t->n++] = fd;
    return fd;
}

static int on_close_socket(void *ud, curl_socket_t fd)
{
    tc_sockets_t *t = ud;
    for (int i = 0; i < t->n; i++) {
        if (t->fds[i] == fd) {
            t->fds[i] = t->fds[--t->n];
            break;
        }
    }
    return close(fd);
}

/* Route an easy handle's socket life cycle through the table t. */
void tc_sockets_adopt(tc_sockets_t *t, CURL *easy)
{
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, t);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, t);
}

/* In a process that did not open them (a forked child): point every
 * socket at /dev/null, so that closing them afterwards (a TLS
 * close_notify included) touches nothing the parent still uses. */
void tc_sockets_disown(tc_sockets_t *t)
{
    for (int i = 0; i < t->n; i++) {
        int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null_fd >= 0) {
            dup2(null_fd, t->fds[i]);
            close(null_fd);
        }
    }
}

/* Block SIGPIPE in this thread while libcurl writes; NOSIGNAL leaves it
 * to us. A SIGPIPE raised meanwhile is consumed before unblocking, unless
 * one was already pending for somebody else. */
void tc_sigpipe_block(tc_sigpipe_t *s)
{
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigemptyset(&pending);
    sigpending(&pending);
    s->pending_before = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &s->old);
}

void tc_sigpipe_restore(const tc_sigpipe_t *s)
{
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigemptyset(&pending);
    sigpending(&pending);
    if (!s->pending_before && sigismember(&pending, SIGPIPE)) {
        struct timespec zero = { 0, 0 };
        while (sigtimedwait(&set, NULL, &zero) == -1 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &s->old, NULL);
}

/* Close the handle, and with it every connection; in a forked child the
 * inherited sockets are disowned first. */
static void drop_handle(tc_client_t *c)
{
    if (c->ex.easy == NULL)
        return;
    if (c->owner_pid != getpid())
        tc_sockets_disown(&c->sockets);
    tc_sigpipe_t guard;
    tc_sigpipe_block(&guard);
    curl_easy_cleanup(c->ex.easy);
    tc_sigpipe_restore(&guard);
    c->ex.easy = NULL;
    tc_exchange_forget(&c->ex);   /* nothing is set on the next handle */
    c->sockets.n = 0;
}

/* Make sure the client has a handle that this process owns. Returns 0,
 * or -1 when libcurl cannot make one. */
int tc_client_ensure_handle(tc_client_t *c)
{
    if (c->ex.easy != NULL && c->owner_pid == getpid())
        return 0;
    drop_handle(c);
    c->ex.easy = curl_easy_init();
    c->owner_pid = getpid();
    return c->ex.easy ? 0 : -1;
}

/* Free everything the client owns; safe to call twice. The key is wiped
 * so it does not linger in freed memory. */
void tc_client_close(tc_client_t *c)
{
    drop_handle(c);
    tc_exchange_free(&c->ex);
    tc_settings_t *s = &c->settings;
    char *secrets[] = { s->auth_header, s->key_json[0], s->key_json[1] };
    for (int i = 0; i < 3; i++) {
        if (secrets[i]) {
            volatile char *p = secrets[i];
            while (*p) *p++ = 0;
        }
        free(secrets[i]);
    }
    s->key_json[0] = s->key_json[1] = NULL;
    free(s->base_url);
    free(s->user_agent);
    free(s->ca_file);
    free(s->proxy);
    s->auth_header = s->key = s->base_url = s->user_agent = s->ca_file = s->proxy = NULL;
}
