#!/usr/bin/env python3
# spec/fuzz/seeds.py - writes the committed seed corpora of the libFuzzer
# targets into spec/fuzz/corpus/<target>/ (deterministic; re-run after
# changing a decoder). Regression inputs (regress-*) are kept as they are.
# SPDX-License-Identifier: MIT
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# ---- fuzz_checks: plain strings; '\n' separates edit-distance operands
checks = {
    "ipv4": "203.0.113.10", "ipv4-leading-zero": "01.2.3.4", "ipv4-256": "256.1.1.1",
    "ipv4-loopback": "127.0.0.1", "host": "sip.example.com", "host-trailing-dot": "sip.example.com.",
    "host-digits-last": "1.2.3.999", "host-dash": "-bad-.example", "sip-prefix": "sip:sip.example.com",
    "sips-prefix": "SIPS:x", "localhost": "localhost", "ipv6-loopback": "[::1]",
    "uuid": "123e4567-e89b-42d3-a456-426614174000", "token": "acme-trunk_1",
    "whitespace": "a b\t\r\n", "distance": "carrier_name\ncarier_name\ncarrier",
    "label-63": "a" * 63 + ".com", "label-64": "a" * 64 + ".com",
    "host-253": ".".join(["a" * 61] * 4) + "a",
    "e164": "+14155550100", "e164-nongeo": "+80012345678", "e164-unassigned": "+999123456789",
    "e164-15": "+123456789012345", "e164-16": "+1234567890123456", "e164-zero": "+0123",
}
for k, v in checks.items():
    write("fuzz_checks", k, v)
write("fuzz_checks", "utf8-2", "caf\xe9".encode("utf-8"))
write("fuzz_checks", "utf8-4", "\U0001F600".encode("utf-8"))
write("fuzz_checks", "utf8-surrogate", b"\xed\xa0\x80")
write("fuzz_checks", "utf8-overlong", b"\xc0\xaf")
write("fuzz_checks", "utf8-above", b"\xf4\x90\x80\x80")
write("fuzz_checks", "nul", b"127.0.0.1\x00x")

# ---- fuzz_retry_after: now (5 bytes), attempts, max_retries, retryable, jitter, value
NOW = 1445412480  # Wed, 21 Oct 2015 07:28:00 GMT
def ra(now, attempts, max_retries, retryable, jitter, value):
    return now.to_bytes(5, "big") + bytes([attempts, max_retries, retryable, jitter]) + value.encode()
for i, v in enumerate(["120", " 0 ", "61", "60", "Wed, 21 Oct 2015 07:28:00 GMT",
                       "Wed, 21 Oct 2015 07:29:00 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
                       "Sun Nov  6 08:49:37 1994", "garbage", "99999999999999999999", "-1", "1.5", ""]):
    write("fuzz_retry_after", "value-%02d" % i, ra(NOW, i % 4, 2, 1, 128, v))

# ---- fuzz_classify: code, status (2), flags, errbuf (len + bytes), now (4), head
def cl(code, status, flags, err, head):
    return (bytes([code]) + struct.pack(">h", status) + bytes([flags, len(err)]) + err.encode()
            + NOW.to_bytes(4, "big") + head.encode())
write("fuzz_classify", "ok-201", cl(0, 201, 0, "", "HTTP/1.1 201 Created\r\nX-Request-Id: req_1\r\n\r\n"))
write("fuzz_classify", "api-503", cl(0, 503, 0, "", "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\r\n"))
write("fuzz_classify", "api-429-date", cl(0, 429, 0, "", "HTTP/1.1 429 Too Many\r\nretry-after: Wed, 21 Oct 2015 07:29:00 GMT\r\n\r\n"))
write("fuzz_classify", "timeout", cl(28, 0, 0, "Operation timed out after 1000 milliseconds", ""))
write("fuzz_classify", "oversize", cl(23, 201, 1, "Failure writing output", "HTTP/1.1 201 Created\r\n\r\n"))
write("fuzz_classify", "tls", cl(60, 0, 0, "SSL certificate problem", ""))
write("fuzz_classify", "no-head", cl(7, 0, 8, "", ""))

# ---- fuzz_headers: "name\n" + header block
write("fuzz_headers", "retry-after", "Retry-After\nHTTP/1.1 503 Service Unavailable\r\nRetry-After: 120\r\n"
      "X-Request-Id: req_1\r\nX-Request-Id: req_2\r\n\r\n")
write("fuzz_headers", "continue", "Content-Type\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n"
      "Content-Type: application/json\r\nLocation:  /v1/x \t\r\n\r\n")
write("fuzz_headers", "bare-lf", "x-a\nHTTP/1.1 200 OK\nX-A:1\nx-a: 2\n\n")
write("fuzz_headers", "empty-values", "Location\nLocation:\r\n: nameless\r\nLocation: \r\n\r\n")

# ---- fuzz_validate: the decoder of fuzz_validate.c
DICT = ["carrier_name", "trunk_type", "sip_gateway", "registration", "inbound_auth",
        "ipv4", "port", "inbound", "outbound", "username", "password", "sip_realm",
        "from_domain", "from_user", "public_ip_in_contact", "use_tls",
        "static_ip", "auth", "reg", "My VoIP Provider", "203.0.113.10", "127.0.0.1",
        "01.2.3.4", "256.1.1.1", "sip.example.com", "sip:sip.example.com", "SIPS:x"]
def s(word): return bytes([1, DICT.index(word)])
def i8(n): return bytes([5, n & 0xFF])
T, F = bytes([9]), bytes([10])
def special(k): return bytes([7, k])
def tbl(pairs, trap=False):
    out = bytes([11, len(pairs)])
    for k, v in pairs:
        out += k + v
    return out + (b"\xee" if trap else b"\x00")
def top(pairs, trap=False):   # the top-level table has no op byte
    return tbl(pairs, trap)[1:]
gw = tbl([(s("ipv4"), s("203.0.113.10")), (s("port"), special(7)), (s("inbound"), T), (s("outbound"), T)])
write("fuzz_validate", "static-ip", top([(s("carrier_name"), s("My VoIP Provider")), (s("sip_gateway"), gw)]))
reg = tbl([(s("username"), s("auth")), (s("password"), s("reg")), (s("sip_realm"), s("sip.example.com")),
           (s("from_domain"), s("127.0.0.1")), (s("use_tls"), F)])
out_gw = tbl([(s("ipv4"), s("sip.example.com")), (s("inbound"), F)])
write("fuzz_validate", "reg", top([(s("carrier_name"), s("My VoIP Provider")), (s("trunk_type"), s("reg")),
                                   (s("sip_gateway"), out_gw), (s("registration"), reg)]))
auth = tbl([(s("username"), s("auth")), (s("password"), s("reg"))])
write("fuzz_validate", "auth", top([(s("carrier_name"), s("My VoIP Provider")), (s("trunk_type"), s("auth")),
                                    (s("sip_gateway"), gw), (s("inbound_auth"), auth)], trap=True))
bad_gw = tbl([(s("ipv4"), s("01.2.3.4")), (s("port"), special(0)), (s("inbound"), F), (s("outbound"), F),
              (i8(1), T)], trap=True)
write("fuzz_validate", "many-errors", top([(s("carrier_name"), bytes([4, 15, 0])), (s("trunk_type"), s("password")),
                                           (s("sip_gateway"), bad_gw), (s("registration"), i8(3)),
                                           (special(3), T), (bytes([14, 0]), bytes([14, 0]))]))
