#!/usr/bin/env python3
"""Compatibility check: SQLAlchemy + sqlalchemy-rqlite (==2.0) + pyrqlite (==2.2.3),
unmodified, against a server that claims rqlite's HTTP API (sqlraft).

Usage: sqlalchemy_test.py [LEADER_URL [FOLLOWER_URL]]
  env RQLITE_LEADER (default http://127.0.0.1:4001), RQLITE_FOLLOWER (optional),
      RQLITE_USER / RQLITE_PASSWORD (basic auth), RQLITE_CA (CA file for https).
Prints "ok - <check>" / "FAIL - <check>: <why>", then "N passed, N failed"; exit 1 on failure.

Written in the style that runs on SQLAlchemy 1.4, 2.0 and 2.1 (declarative_base + Column).
What the dialect does (docs/TESTING.md, rqlite clients): URL rqlite+pyrqlite://user:pw@host:port/
[?scheme=https]; every statement is its own HTTP request (commit/rollback send nothing);
executemany() is one POST /db/execute?transaction; SQL errors surface as
sqlalchemy.exc.DBAPIError wrapping pyrqlite's Error (never IntegrityError); no way to
choose a read consistency level (no level= is sent).
"""
import datetime
import logging
import os
import ssl
import sys
import time
import uuid
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy import exc, inspect, select, text
from sqlalchemy.orm import Session, declarative_base

logging.getLogger("pyrqlite").setLevel(logging.CRITICAL)  # executemany logs expected errors

LEADER = (sys.argv[1] if len(sys.argv) > 1 else None) or os.environ.get("RQLITE_LEADER") or "http://127.0.0.1:4001"
FOLLOWER = (sys.argv[2] if len(sys.argv) > 2 else None) or os.environ.get("RQLITE_FOLLOWER") or None
USER = os.environ.get("RQLITE_USER") or None
PASSWORD = os.environ.get("RQLITE_PASSWORD") or None
CA = os.environ.get("RQLITE_CA") or None
SUFFIX = uuid.uuid4().hex[:12]
PASSED, FAILED = [], []


def make_engine(url, password=PASSWORD, **kw):
    u = urlsplit(url)
    query = {"scheme": "https"} if u.scheme == "https" else {}
    connect_args = {"ssl_context": ssl.create_default_context(cafile=CA)} if u.scheme == "https" else {}
    sa_url = sa.engine.URL.create("rqlite+pyrqlite", username=USER, password=password if USER else None,
                                  host=u.hostname, port=u.port, query=query)
    # native_datetime=True: pyrqlite already converts DATE/TIMESTAMP columns to date/datetime
    # objects; without it SQLAlchemy's str->date processor raises on every Date column
    # (TypeError "fromisoformat: argument must be str" on 2.x, ValueError on 1.4).
    engine = sa.create_engine(sa_url, connect_args=connect_args, native_datetime=True, **kw)
    # sqlalchemy-rqlite 2.0 (PyPI) lacks _get_server_version_info (added upstream 2025-06,
    # unreleased), so server_version_info stays None and reflection (get_columns) dies on
    # "None >= (3, 31)".  Same value the upstream fix returns:
    with engine.connect():
        pass
    if engine.dialect.server_version_info is None:
        engine.dialect.server_version_info = engine.dialect.dbapi.sqlite_version_info
    return engine


def check(name):
    def deco(fn):
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            FAILED.append(name)
            print("FAIL - %s: %s: %s" % (name, type(e).__name__, str(e).splitlines()[0] if str(e) else ""))
        else:
            PASSED.append(name)
            print("ok - " + name)
        return fn
    return deco


def eventually(fn, timeout=5.0):
    deadline = time.time() + timeout
    while True:
        try:
            return fn()
        except AssertionError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


Base = declarative_base()


class Account(Base):
    __tablename__ = "sa_acct_" + SUFFIX
    id = sa.Column(sa.Integer, primary_key=True)
    name = sa.Column(sa.String(100), unique=True, nullable=False)
    balance = sa.Column(sa.BigInteger)
    ratio = sa.Column(sa.Float)
    note = sa.Column(sa.Unicode(200))
    avatar = sa.Column(sa.LargeBinary)
    created = sa.Column(sa.DateTime)
    birthday = sa.Column(sa.Date)
    active = sa.Column(sa.Boolean)


events = sa.Table("sa_evt_" + SUFFIX, Base.metadata,
                  sa.Column("id", sa.Integer, primary_key=True),
                  sa.Column("kind", sa.String(20), unique=True),
                  sa.Column("n", sa.Integer))

BIG = 2**60 + 1
NOTE = "héllo wörld ✓ 日本語 🚀 O'Brien"
BLOB = bytes(range(256))
WHEN = datetime.datetime(2024, 1, 2, 3, 4, 5, 123456)
DAY = datetime.date(2024, 2, 29)

engine = make_engine(LEADER, pool_pre_ping=True)
state = {}


@check("connect (dialect initialize: PRAGMA read_uncommitted etc.) and SELECT 1")
def _():
    with engine.connect() as c:
        assert c.execute(text("SELECT 1")).scalar() == 1


@check("metadata.create_all (PRAGMA table_info probes, CREATE TABLE)")
def _():
    Base.metadata.create_all(engine)
    insp = inspect(engine)
    assert insp.has_table(Account.__tablename__)
    assert Account.__tablename__ in insp.get_table_names()


@check("reflection: Table(autoload_with=engine) / get_columns")
def _():
    # needs the server_version_info work-around in make_engine()
    t = sa.Table(Account.__tablename__, sa.MetaData(), autoload_with=engine)
    assert [c.name for c in t.columns][:3] == ["id", "name", "balance"], list(t.columns)


@check("ORM: add_all + commit assigns primary keys from last_insert_id")
def _():
    with Session(engine) as s:
        objs = [Account(name="alice", balance=BIG, ratio=0.1, note=NOTE, avatar=BLOB, created=WHEN,
                        birthday=DAY, active=True),
                Account(name="bob", balance=-2**63, ratio=None, note="", avatar=b"", created=None,
                        birthday=None, active=False),
                Account(name="carol")]
        s.add_all(objs)
        s.commit()
        ids = [o.id for o in objs]
        assert ids == sorted(ids) and None not in ids, ids
        state["ids"] = ids


@check("ORM: refresh re-reads every type exactly (BigInteger 2**60+1, Float, Unicode, LargeBinary, DateTime, Date, Boolean)")
def _():
    with Session(engine) as s:
        a = s.get(Account, state["ids"][0])
        s.refresh(a)
        got = (a.name, a.balance, a.ratio, a.note, a.avatar, a.created, a.birthday, a.active)
        want = ("alice", BIG, 0.1, NOTE, BLOB, WHEN, DAY, True)
        assert got == want, "got %r" % (got,)
        b = s.execute(select(Account).where(Account.name == "bob")).scalar_one()
        got = (b.balance, b.ratio, b.note, b.avatar, b.created, b.birthday, b.active)
        assert got == (-2**63, None, "", b"", None, None, False), "got %r" % (got,)


@check("ORM: update + commit (UPDATE rowcount must be 1, else StaleDataError)")
def _():
    with Session(engine) as s:
        a = s.execute(select(Account).where(Account.name == "alice")).scalar_one()
        a.balance = BIG + 1
        a.note = "updated ✓"
        s.commit()
    with Session(engine) as s:
        a = s.execute(select(Account).where(Account.name == "alice")).scalar_one()
        assert (a.balance, a.note) == (BIG + 1, "updated ✓"), (a.balance, a.note)


@check("ORM: delete + commit (DELETE rowcount must match)")
def _():
    with Session(engine) as s:
        s.delete(s.execute(select(Account).where(Account.name == "carol")).scalar_one())
        s.commit()
    with Session(engine) as s:
        assert s.get(Account, state["ids"][2]) is None
        assert s.execute(select(sa.func.count()).select_from(Account)).scalar() == 2


@check("UNIQUE violation -> sqlalchemy.exc.DBAPIError wrapping pyrqlite Error (not IntegrityError)")
def _():
    with Session(engine) as s:
        s.add(Account(name="alice"))
        try:
            s.commit()
        except exc.DBAPIError as e:
            s.rollback()
            assert "UNIQUE constraint failed" in str(e.orig), str(e.orig)
            assert not isinstance(e, exc.IntegrityError), "dialect now maps IntegrityError: update notes"
        else:
            raise AssertionError("duplicate insert did not raise")


@check("syntax error -> sqlalchemy.exc.DBAPIError containing 'syntax error'")
def _():
    with engine.connect() as c:
        try:
            c.execute(text("SELECT * FROM %s WHERE WHERE" % Account.__tablename__))
        except exc.DBAPIError as e:
            assert "syntax error" in str(e.orig), str(e.orig)
        else:
            raise AssertionError("no error raised")


@check("session.rollback() cannot undo an already flushed INSERT (each statement autocommits)")
def _():
    with Session(engine) as s:
        s.add(Account(name="flushed-then-rolled-back"))
        s.flush()
        s.rollback()
    with Session(engine) as s:
        n = s.execute(select(sa.func.count()).select_from(Account)
                      .where(Account.name == "flushed-then-rolled-back")).scalar()
        assert n == 1, "row count %d: server or client now has real transactions; update notes" % n


@check("Core executemany insert: one atomic POST /db/execute?transaction")
def _():
    with engine.begin() as c:
        c.execute(events.insert(), [{"kind": "k%d" % i, "n": i} for i in range(5)])
    with engine.connect() as c:
        assert c.execute(select(sa.func.count()).select_from(events)).scalar() == 5


@check("Core executemany with a duplicate applies nothing (may or may not raise)")
def _():
    try:
        with engine.begin() as c:
            c.execute(events.insert(), [{"kind": "new-1", "n": 1}, {"kind": "k0", "n": 2}])
    except exc.DBAPIError:
        pass  # raised only if SQLAlchemy used cursor.execute; pyrqlite's executemany swallows errors
    with engine.connect() as c:
        n = c.execute(select(sa.func.count()).select_from(events).where(events.c.kind == "new-1")).scalar()
        assert n == 0, "part of a failed batch was applied"


@check("Core UPDATE/DELETE rowcount and bound parameters with unicode")
def _():
    with engine.begin() as c:
        r = c.execute(events.update().where(events.c.n >= 3).values(kind=sa.func.upper(events.c.kind)))
        assert r.rowcount == 2, r.rowcount
        r = c.execute(events.delete().where(events.c.kind == "K4"))
        assert r.rowcount == 1, r.rowcount
        r = c.execute(select(events.c.kind).where(events.c.kind.in_(["K3", "ü"]))).scalars().all()
        assert r == ["K3"], r


if FOLLOWER:
    fengine = make_engine(FOLLOWER)

    @check("ORM write through the follower engine, visible on the follower")
    def _():
        with Session(fengine) as s:
            s.add(Account(name="via-follower", balance=BIG))
            s.commit()

        def seen():
            with Session(fengine) as s:
                a = s.execute(select(Account).where(Account.name == "via-follower")).scalar_one_or_none()
                assert a is not None and a.balance == BIG
        eventually(seen)

if USER:
    @check("wrong password -> DBAPIError 'unexpected http status: 401' on first connect")
    def _():
        try:
            make_engine(LEADER, password="definitely-wrong")  # connects once
        except exc.DBAPIError as e:
            assert "401" in str(e.orig), str(e.orig)
        else:
            raise AssertionError("no error with a wrong password")


@check("metadata.drop_all")
def _():
    Base.metadata.drop_all(engine)
    assert not inspect(engine).has_table(Account.__tablename__)

print("sqlalchemy %s: %d passed, %d failed" % (sa.__version__, len(PASSED), len(FAILED)))
sys.exit(1 if FAILED else 0)
