#!/usr/bin/env python3
# bench/py_requests.py URL N - N carriers POSTs through one requests.Session
# (kept alive), decoding each JSON answer; prints the seconds they took.
# SPDX-License-Identifier: MIT
import sys, time, requests

url, n = sys.argv[1] + "/v1/phone-numbers/carriers", int(sys.argv[2])
body = {"carrier_name": "My VoIP Provider",
        "sip_gateway": {"ipv4": "203.0.113.10", "port": 5060, "inbound": True, "outbound": True}}
s = requests.Session()
s.headers.update({"Authorization": "Bearer tc_test_bench0123456789", "Accept": "application/json"})

def post(i):
    r = s.post(url, json=body, headers={"Idempotency-Key": "bench-%d" % i}, timeout=10)
    assert r.status_code == 201, r.status_code
    return r.json()

for i in range(20):
    post(-i - 1)
t0 = time.perf_counter()
for i in range(n):
    post(i)
print("%.6f" % (time.perf_counter() - t0))
