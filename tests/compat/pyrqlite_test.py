#!/usr/bin/env python3
"""Compatibility check: pyrqlite (==2.2.3, DB-API 2), unmodified, against a
server that claims rqlite's HTTP API (sqlraft).

Usage: pyrqlite_test.py [LEADER_URL [FOLLOWER_URL]]
  env RQLITE_LEADER  (default http://127.0.0.1:4001)   e.g. http://127.0.0.1:7220
      RQLITE_FOLLOWER (optional: enables the follower checks)
      RQLITE_USER / RQLITE_PASSWORD (basic auth, optional)
      RQLITE_CA (CA file for https URLs, optional)
Prints "ok - <check>" per passed check and "FAIL - <check>: <why>" per failure, then
"N passed, N failed"; exits 1 if anything failed.

pyrqlite facts these checks rely on (docs/TESTING.md, rqlite clients):
  - parameters are substituted into the SQL text client-side (no JSON parameters):
    str -> 'quoted', bytes -> X'hex', int/float -> str(), None -> NULL, bool -> 0/1,
    datetime -> 'YYYY-MM-DD HH:MM:SS.ffffff';
  - statements starting with SELECT/PRAGMA go to GET /db/query?q=...[&level=...],
    everything else to POST /db/execute?transaction with a one-element JSON array;
  - executemany() sends all statements in ONE POST /db/execute?transaction and does not
    raise on SQL errors (it only logs them);
  - every SQL error raises pyrqlite's Error (= sqlite3.Error) carrying the JSON of the
    failing result; there is no mapping to IntegrityError/OperationalError;
  - commit()/rollback() send nothing.
"""
import datetime
import logging
import os
import ssl
import sys
import time
import uuid
from urllib.parse import urlsplit

import pyrqlite.dbapi2 as dbapi

logging.getLogger("pyrqlite").setLevel(logging.CRITICAL)  # executemany logs expected errors

LEADER = (sys.argv[1] if len(sys.argv) > 1 else None) or os.environ.get("RQLITE_LEADER") or "http://127.0.0.1:4001"
FOLLOWER = (sys.argv[2] if len(sys.argv) > 2 else None) or os.environ.get("RQLITE_FOLLOWER") or None
USER = os.environ.get("RQLITE_USER") or None
PASSWORD = os.environ.get("RQLITE_PASSWORD") or None
CA = os.environ.get("RQLITE_CA") or None

T = "py_" + uuid.uuid4().hex[:12]
PASSED, FAILED = [], []


def connect(url, password=PASSWORD):
    u = urlsplit(url)
    kw = dict(scheme=u.scheme, host=u.hostname, port=u.port or (443 if u.scheme == "https" else 80),
              user=USER, password=password, timeout=10)
    if u.scheme == "https":
        kw["ssl_context"] = ssl.create_default_context(cafile=CA)
    return dbapi.connect(**kw)


def check(name):
    def deco(fn):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - report every failure, keep going
            FAILED.append(name)
            print("FAIL - %s: %s: %s" % (name, type(e).__name__, e))
        else:
            PASSED.append(name)
            print("ok - " + name)
        return fn
    return deco


def expect_error(fn, substring):
    try:
        fn()
    except dbapi.Error as e:
        assert substring in str(e), "error %r lacks %r" % (str(e), substring)
        return e
    raise AssertionError("no exception raised (expected one containing %r)" % substring)


def eventually(fn, timeout=5.0):
    deadline = time.time() + timeout
    while True:
        try:
            return fn()
        except AssertionError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


conn = connect(LEADER)
cur = conn.cursor()

BIG = 2**60 + 1
TEXT = "héllo wörld ✓ 日本語 🚀 O'Brien \"q\" \\ tab\t newline\n"
BLOB = bytes(range(256))
TS = datetime.datetime(2024, 1, 2, 3, 4, 5, 123456)
DAY = datetime.date(2024, 2, 29)


@check("CREATE TABLE (POST /db/execute?transaction)")
def _():
    cur.execute("CREATE TABLE %s (id INTEGER PRIMARY KEY, name TEXT UNIQUE, n INTEGER, r REAL, "
                "b BLOB, ts TIMESTAMP, d DATE, flag BOOLEAN)" % T)
    assert cur.description is None


@check("parameterized INSERT (qmark) sets lastrowid from last_insert_id")
def _():
    cur.execute("INSERT INTO %s (name, n, r, b, ts, d, flag) VALUES (?, ?, ?, ?, ?, ?, ?)" % T,
                (TEXT, BIG, 3.141592653589793, BLOB, TS, DAY, True))
    assert cur.lastrowid == 1, "lastrowid %r" % cur.lastrowid


@check("parameterized INSERT (named :params) with NULLs and empty values")
def _():
    cur.execute("INSERT INTO %s (name, n, r, b, ts) VALUES (:name, :num, :real, :blob, :stamp)" % T,
                {"name": "nulls", "num": None, "real": None, "blob": None, "stamp": None})
    cur.execute("INSERT INTO %s (name, n, b) VALUES (?, ?, ?)" % T, ("", -2**63, b""))
    assert cur.lastrowid == 3, "lastrowid %r" % cur.lastrowid


@check("types round trip: 2**60+1, real, unicode text, blob, TIMESTAMP, DATE, BOOLEAN")
def _():
    cur.execute("SELECT name, n, r, b, ts, d, flag FROM %s WHERE id = ?" % T, (1,))
    row = cur.fetchone()
    assert cur.rowcount == 1, cur.rowcount
    assert [d[0] for d in cur.description] == ["name", "n", "r", "b", "ts", "d", "flag"], cur.description
    assert row["name"] == TEXT, repr(row["name"])
    assert row["n"] == BIG and isinstance(row["n"], int), repr(row["n"])
    assert row["r"] == 3.141592653589793, repr(row["r"])
    assert row["b"] == BLOB, "blob: %r" % (row["b"][:16],)  # base64 in JSON, type 'blob'
    # rqlite returns TIMESTAMP/DATETIME/DATE columns as RFC 3339 text ("...T...Z");
    # pyrqlite's TIMESTAMP converter needs the 'T' (extensions.py _convert_timestamp)
    assert row["ts"] == TS, repr(row["ts"])
    assert row["d"] == DAY, repr(row["d"])
    assert row["flag"] == True, repr(row["flag"])  # noqa: E712 (rqlite sends JSON true)


@check("NULLs, empty text, empty blob, -2**63")
def _():
    cur.execute("SELECT n, r, b, ts FROM %s WHERE name = 'nulls'" % T)
    assert tuple(cur.fetchone()) == (None, None, None, None)
    cur.execute("SELECT name, n, b FROM %s WHERE id = 3" % T)
    got = tuple(cur.fetchone())
    assert got == ("", -2**63, b""), "got %r" % (got,)


@check("expression columns get types from values (SELECT 1+1, 'a'||'b', 2.5, CAST(.. AS TEXT))")
def _():
    # (not x'..': rqlite turns a BLOB with no declared type into *text*, see clients.md)
    cur.execute("SELECT 1+1 AS i, 'a'||'b' AS s, 2.5 AS f, CAST(? AS TEXT) AS big", (BIG,))
    got = tuple(cur.fetchone())
    assert got == (2, "ab", 2.5, str(BIG)), "got %r" % (got,)


@check("empty result keeps description, fetchall() == []")
def _():
    cur.execute("SELECT id, name FROM %s WHERE 0" % T)
    assert cur.fetchall() == []
    assert [d[0] for d in cur.description] == ["id", "name"], cur.description


@check("PRAGMA goes to /db/query and returns rows")
def _():
    cur.execute("PRAGMA table_info(%s)" % T)
    names = [r[1] for r in cur.fetchall()]
    assert names[:3] == ["id", "name", "n"], names


for level in ("none", "weak", "linearizable", "strong"):
    @check("read at consistency=%s (GET /db/query?level=%s)" % (level, level))
    def _(level=level):
        cur.execute("SELECT COUNT(*) FROM %s" % T, consistency=level)
        assert cur.fetchone()[0] == 3


@check("executemany = one atomic POST /db/execute?transaction; rowcount sums rows_affected")
def _():
    cur.executemany("INSERT INTO %s (name, n) VALUES (?, ?)" % T, [("tx%d" % i, i) for i in range(3)])
    assert cur.rowcount == 3, cur.rowcount
    cur.execute("SELECT COUNT(*) FROM %s WHERE name LIKE 'tx%%'" % T)
    assert cur.fetchone()[0] == 3


@check("failed executemany applies nothing (transaction rolled back; pyrqlite does not raise)")
def _():
    cur.executemany("INSERT INTO %s (name) VALUES (?)" % T, [("tx-new",), ("tx0",)])
    cur.execute("SELECT COUNT(*) FROM %s WHERE name = 'tx-new'" % T)
    assert cur.fetchone()[0] == 0, "first statement of a failed transaction was applied"


@check("UPDATE/DELETE rowcount comes from rows_affected")
def _():
    cur.execute("UPDATE %s SET r = ? WHERE name LIKE 'tx%%'" % T, (1.5,))
    assert cur.rowcount == 3, cur.rowcount
    cur.execute("DELETE FROM %s WHERE name = ?" % T, ("tx2",))
    assert cur.rowcount == 1, cur.rowcount
    cur.execute("UPDATE %s SET r = 0 WHERE 0" % T)
    assert cur.rowcount == 0, cur.rowcount  # rqlite omits rows_affected when 0


@check("UNIQUE violation raises pyrqlite Error (not IntegrityError) with the SQLite text")
def _():
    e = expect_error(lambda: cur.execute("INSERT INTO %s (name) VALUES (?)" % T, ("tx0",)),
                     "UNIQUE constraint failed: %s.name" % T)
    assert type(e) is dbapi.Error, "pyrqlite 2.2.3 raises plain Error, got %s" % type(e).__name__


@check("syntax error (write path) raises Error containing 'syntax error'")
def _():
    expect_error(lambda: cur.execute("INSERT INTO %s VALUES VALUES" % T), "syntax error")


@check("syntax error and missing table (read path) raise Error")
def _():
    expect_error(lambda: cur.execute("SELECT * FROM %s WHERE WHERE" % T), "syntax error")
    expect_error(lambda: cur.execute("SELECT * FROM no_such_%s" % T), "no such table")


@check("queued write (?queue&wait) becomes visible")
def _():
    cur.execute("INSERT INTO %s (name) VALUES (?)" % T, ("queued",), queue=True, wait=True)

    def seen():
        cur.execute("SELECT COUNT(*) FROM %s WHERE name = 'queued'" % T)
        assert cur.fetchone()[0] == 1
    eventually(seen)


@check("Row supports index, name and keys()")
def _():
    cur.execute("SELECT id, name FROM %s WHERE id = 1" % T)
    row = cur.fetchone()
    assert row[0] == 1 and row["id"] == 1 and row.keys() == ["id", "name"]


if FOLLOWER:
    fconn = connect(FOLLOWER)
    fcur = fconn.cursor()

    @check("write sent to the follower succeeds (forwarded or 301-followed) and is on the leader")
    def _():
        fcur.execute("INSERT INTO %s (name) VALUES (?)" % T, ("via-follower",))
        cur.execute("SELECT COUNT(*) FROM %s WHERE name = 'via-follower'" % T, consistency="strong")
        assert cur.fetchone()[0] == 1

    @check("follower read at level=none eventually sees the leader's write")
    def _():
        cur.execute("INSERT INTO %s (name) VALUES (?)" % T, ("for-follower",))

        def seen():
            fcur.execute("SELECT COUNT(*) FROM %s WHERE name = 'for-follower'" % T, consistency="none")
            assert fcur.fetchone()[0] == 1
        eventually(seen)

    @check("follower read at level=linearizable sees the leader's write at once")
    def _():
        cur.execute("INSERT INTO %s (name) VALUES (?)" % T, ("lin",))
        fcur.execute("SELECT COUNT(*) FROM %s WHERE name = 'lin'" % T, consistency="linearizable")
        assert fcur.fetchone()[0] == 1

if USER:
    @check("wrong password -> Error('received unexpected http status: 401')")
    def _():
        bad = connect(LEADER, password="definitely-wrong")
        expect_error(lambda: bad.cursor().execute("SELECT 1"), "unexpected http status: 401")


@check("DROP TABLE")
def _():
    cur.execute("DROP TABLE %s" % T)

print("%d passed, %d failed" % (len(PASSED), len(FAILED)))
sys.exit(1 if FAILED else 0)
