#!/usr/bin/env python3
"""Helpers for bench/soak.sh. Only talks to 127.0.0.1; every loop ends by itself.

  soak.py legit PORT REALM CLIENT_ID SECRET SECS     sequential client_credentials grants
  soak.py silent PORT COUNT SECS                     hold COUNT silent connections for SECS
  soak.py audit DB                                   audit rows by kind (read-only SQLite)

Each prints one JSON object on stdout.
"""

import asyncio
import base64
import http.client
import json
import socket
import sqlite3
import sys
import time

# The legitimate client's source address: another loopback address than the floods' (127.0.0.1),
# so per-address limits that the floods trip do not apply to it, as for two hosts in production.
LEGIT_SOURCE = "127.0.0.2"


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, int(round(p / 100.0 * (len(sorted_values) - 1))))
    return sorted_values[k]


def legit(port, realm, client_id, secret, secs):
    auth = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    headers = {
        "Authorization": "Basic " + auth,
        "Content-Type": "application/x-www-form-urlencoded",
    }
    body = "grant_type=client_credentials"
    path = f"/realms/{realm}/oauth2/token"
    latencies, errors, samples = [], 0, []
    conn = None
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            if conn is None:
                conn = http.client.HTTPConnection(
                    "127.0.0.1", port, timeout=10, source_address=(LEGIT_SOURCE, 0)
                )
            conn.request("POST", path, body=body, headers=headers)
            res = conn.getresponse()
            data = res.read()
            ok = res.status == 200 and b"access_token" in data
            if not ok and len(samples) < 5:
                samples.append(f"{res.status} {data[:200]!r}")
        except (OSError, http.client.HTTPException) as e:
            ok = False
            if len(samples) < 5:
                samples.append(repr(e))
            if conn is not None:
                conn.close()
            conn = None
        took = time.monotonic() - started
        if ok:
            latencies.append(took)
        else:
            errors += 1
    if conn is not None:
        conn.close()
    latencies.sort()
    ms = lambda v: None if v is None else round(v * 1000, 3)
    print(
        json.dumps(
            {
                "ok": len(latencies),
                "errors": errors,
                "error_samples": samples,
                "per_sec": round(len(latencies) / secs, 1),
                "p50_ms": ms(percentile(latencies, 50)),
                "p99_ms": ms(percentile(latencies, 99)),
                "max_ms": ms(latencies[-1] if latencies else None),
            }
        )
    )


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def silent(port, count, secs):
    stats = {"opened": 0, "closed_by_server": 0, "connect_failures": 0, "longest_open_s": 0.0}
    deadline = time.monotonic() + secs

    async def holder(i):
        h2 = i % 5 == 0  # every fifth speaks HTTP/2 (preface + SETTINGS), then falls silent
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), timeout=5
                )
            except (OSError, asyncio.TimeoutError):
                stats["connect_failures"] += 1
                await asyncio.sleep(0.5)
                continue
            stats["opened"] += 1
            opened = time.monotonic()
            try:
                if h2:
                    writer.write(H2_PREFACE)
                    await writer.drain()
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    data = await asyncio.wait_for(reader.read(4096), timeout=left)
                    if not data:
                        raise ConnectionResetError
            except asyncio.TimeoutError:
                # Our own deadline (TimeoutError is an OSError: this clause must come first).
                pass
            except OSError:
                stats["closed_by_server"] += 1
                stats["longest_open_s"] = max(stats["longest_open_s"], time.monotonic() - opened)
            finally:
                writer.close()

    async def main():
        await asyncio.gather(*(holder(i) for i in range(count)))

    asyncio.run(main())
    stats["longest_open_s"] = round(stats["longest_open_s"], 2)
    print(json.dumps(stats))


def audit(db):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    rows = con.execute("SELECT kind, COUNT(*) FROM audit_log GROUP BY kind ORDER BY 2 DESC").fetchall()
    flows = con.execute("SELECT COUNT(*) FROM flows").fetchone()[0]
    con.close()
    print(json.dumps({"total": sum(n for _, n in rows), "by_kind": dict(rows), "flows": flows}))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "legit":
        legit(int(args[0]), args[1], args[2], args[3], float(args[4]))
    elif cmd == "silent":
        silent(int(args[0]), int(args[1]), float(args[2]))
    elif cmd == "audit":
        audit(args[0])
    else:
        sys.exit(f"unknown command {cmd}")
