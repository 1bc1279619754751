// Compatibility check: rqlite-js (2.5.7), unmodified, against a server that
// claims rqlite's HTTP API (sqlraft).
//
// Installed by scripts/compat-env.sh from tests/compat/package-lock.json (with
//   @babel/runtime: 2.5.7's compiled lib/ requires it but only lists it as a devDependency)
// Run:   RQLITE_JS_DIR=<dir holding node_modules> node rqlite_js_test.mjs URL [OTHER_URL]
//        URL: the node under test; OTHER_URL: another node of the cluster
// env:   RQLITE_LEADER (default http://127.0.0.1:4001), RQLITE_FOLLOWER (optional),
//        RQLITE_USER / RQLITE_PASSWORD (basic auth), RQLITE_CA (CA file for https).
// Prints "ok - <check>" / "FAIL - <check>: <why>", then "N passed, N failed"; exit 1 on failure.
//
// rqlite-js facts used here (docs/TESTING.md, rqlite clients): SQL errors never throw, they come
// back as DataResultError entries (results.hasError()/getFirstError()); a statement with
// parameters is an array ["SQL", p1, p2] or ["SQL", {name: v}] inside the body array;
// values are plain JSON.parse numbers (integers beyond 2^53 lose precision); blobs come back
// base64 (the client never sends blob_array); options {level, transaction, timings, pretty}
// become query parameters (?transaction=true, ?level=strong, ...).
import { createRequire } from 'node:module'
import fs from 'node:fs'
import https from 'node:https'
import path from 'node:path'
import crypto from 'node:crypto'

if (!process.env.RQLITE_JS_DIR) { throw new Error('set RQLITE_JS_DIR to the directory holding node_modules') }
const require = createRequire(path.join(process.env.RQLITE_JS_DIR, 'package.json'))
const { DataApiClient, StatusApiClient } = require('rqlite-js')

const LEADER = process.argv[2] || process.env.RQLITE_LEADER || 'http://127.0.0.1:4001'
const FOLLOWER = process.argv[3] || process.env.RQLITE_FOLLOWER || null
const USER = process.env.RQLITE_USER || null
const PASSWORD = process.env.RQLITE_PASSWORD || null
const CA = process.env.RQLITE_CA || null
const T = `js_${crypto.randomBytes(6).toString('hex')}`

function opts (password = PASSWORD) {
  const o = {}
  if (USER) o.authentication = { username: USER, password }
  if (CA) o.httpsAgent = new https.Agent({ ca: fs.readFileSync(CA) })
  return o
}

let passed = 0
let failed = 0
async function check (name, fn) {
  try {
    await fn()
    passed += 1
    console.log(`ok - ${name}`)
  } catch (e) {
    failed += 1
    console.log(`FAIL - ${name}: ${e && e.stack ? e.stack.split('\n').slice(0, 2).join(' | ') : e}`)
  }
}
function assert (cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`)
}
function noError (res, what) {
  const err = res.getFirstError()
  assert(!err, `${what}: ${err && err.message}`)
  return res
}
async function eventually (fn, ms = 5000) {
  const deadline = Date.now() + ms
  for (;;) {
    try { return await fn() } catch (e) {
      if (Date.now() > deadline) throw e
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
}

const db = new DataApiClient(LEADER, opts())
const BIG = '1152921504606846977' // 2**60 + 1: not representable as a JS number
const TEXT = 'héllo wörld ✓ 日本語 🚀 O\'Brien "q" \\ tab\t'
const BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i))

await check('GET /status (StatusApiClient) returns 200 with store.leader', async () => {
  const status = new StatusApiClient(LEADER, opts())
  const res = await status.status()
  assert(res.status === 200, `status ${res.status}`)
  assert(res.body && res.body.store && res.body.store.leader, `body ${JSON.stringify(res.body).slice(0, 200)}`)
})

await check('CREATE TABLE (POST /db/execute, body ["CREATE ..."])', async () => {
  noError(await db.execute(`CREATE TABLE ${T} (id INTEGER PRIMARY KEY, name TEXT UNIQUE, n INTEGER, r REAL, b BLOB)`), 'create')
})

await check('parameterized INSERT: [sql, ...positional]; big int as text, blob as byte array', async () => {
  const res = noError(await db.execute([[`INSERT INTO ${T} (name, n, r, b) VALUES (?, ?, ?, ?)`, TEXT, BIG, 3.141592653589793, [...BYTES]]]), 'insert')
  assert(res.get(0).getLastInsertId() === 1, `last_insert_id ${res.get(0).getLastInsertId()}`)
  assert(res.get(0).getRowsAffected() === 1, `rows_affected ${res.get(0).getRowsAffected()}`)
})

await check('named parameters [sql, {name: value}], NULLs, blob as "X\'..\'" string', async () => {
  noError(await db.execute([
    [`INSERT INTO ${T} (name, n, r, b) VALUES (:name, :n, :r, :b)`, { name: 'nulls', n: null, r: null, b: null }],
    [`INSERT INTO ${T} (name, b) VALUES (?, ?)`, 'hexblob', "X'00FF10'"],
  ]), 'insert')
})

await check('types round trip (integers > 2^53 lose precision as JS numbers; exact via CAST AS TEXT)', async () => {
  const res = noError(await db.query([[`SELECT name, n, CAST(n AS TEXT) AS ns, r, b FROM ${T} WHERE id = ?`, 1]]), 'select')
  const row = res.get(0)
  assert(row.get('name') === TEXT, `text ${JSON.stringify(row.get('name'))}`)
  assert(row.get('ns') === BIG, `CAST text ${row.get('ns')}`)
  assert(typeof row.get('n') === 'number' && row.get('n') === 2 ** 60, `n ${row.get('n')} (JSON number, rounded)`)
  assert(row.get('r') === 3.141592653589793, `real ${row.get('r')}`)
  assert(Buffer.from(row.get('b'), 'base64').equals(BYTES), 'blob (base64) differs')
  const hex = noError(await db.query(`SELECT b FROM ${T} WHERE name = 'hexblob'`), 'select').get(0)
  assert(Buffer.from(hex.get('b'), 'base64').equals(Buffer.from([0, 255, 16])), `hex blob ${hex.get('b')}`)
  const nul = noError(await db.query(`SELECT n, r, b FROM ${T} WHERE name = 'nulls'`), 'select').get(0)
  assert(nul.get('n') === null && nul.get('r') === null && nul.get('b') === null, JSON.stringify(nul.toObject()))
})

await check('empty result: one DataResult with no data (rqlite omits "values")', async () => {
  const res = noError(await db.query(`SELECT id FROM ${T} WHERE 0`), 'select')
  assert(res.getResults().length === 1, `${res.getResults().length} results (server sent values: [] ?)`)
  assert(JSON.stringify(res.get(0).toObject()) === '{}', JSON.stringify(res.get(0).toObject()))
})

for (const level of ['none', 'weak', 'linearizable', 'strong']) {
  await check(`read at level=${level}`, async () => {
    const res = noError(await db.query(`SELECT COUNT(*) AS c FROM ${T}`, { level }), 'count')
    assert(res.get(0).get('c') === 3, `count ${res.get(0).get('c')}`)
  })
}

await check('multi-statement query: POST /db/query with a JSON array', async () => {
  const res = noError(await db.query([`SELECT 1 AS a`, [`SELECT ? AS b`, 'x']]), 'query')
  assert(res.get(0).get('a') === 1 && res.get(1).get('b') === 'x', res.toString())
})

await check('transaction: 3 inserts in one POST /db/execute?transaction=true', async () => {
  const stmts = [0, 1, 2].map((i) => [`INSERT INTO ${T} (name, n) VALUES (?, ?)`, `tx${i}`, i])
  const res = noError(await db.execute(stmts, { transaction: true }), 'tx')
  assert(res.getResults().length === 3, `${res.getResults().length} results`)
})

await check('failed transaction: error in results, nothing applied', async () => {
  const res = await db.execute([[`INSERT INTO ${T} (name) VALUES (?)`, 'tx-new'], [`INSERT INTO ${T} (name) VALUES (?)`, 'tx0']], { transaction: true })
  assert(res.hasError(), 'no error reported')
  assert(/UNIQUE constraint failed/.test(res.getFirstError().message), res.getFirstError().message)
  const c = noError(await db.query([[`SELECT COUNT(*) AS c FROM ${T} WHERE name = ?`, 'tx-new']]), 'count').get(0).get('c')
  assert(c === 0, 'first statement of a failed transaction was applied')
})

await check('without transaction an error does not stop later statements', async () => {
  const res = await db.execute([[`INSERT INTO ${T} (name) VALUES (?)`, 'tx0'], [`INSERT INTO ${T} (name) VALUES (?)`, 'after-error']])
  assert(res.getResults().length === 2, `${res.getResults().length} results`)
  assert(res.get(0).constructor.name === 'DataResultError', 'first result is not an error')
  assert(res.get(1).getLastInsertId() > 0, 'second statement not executed')
})

await check('SQL errors do not throw: DataResultError with SQLite text (syntax, no such table)', async () => {
  const r1 = await db.execute(`INSERT INTO ${T} VALUES VALUES`)
  assert(r1.hasError() && /syntax error/.test(r1.getFirstError().message), r1.toString())
  const r2 = await db.query(`SELECT * FROM no_such_${T}`)
  assert(r2.hasError() && /no such table/.test(r2.getFirstError().message), r2.toString())
})

await check('UPDATE/DELETE rows_affected', async () => {
  const u = noError(await db.execute(`UPDATE ${T} SET r = 1.5 WHERE name LIKE 'tx%'`), 'update')
  assert(u.get(0).getRowsAffected() === 3, `update ${u.get(0).getRowsAffected()}`)
  const d = noError(await db.execute(`DELETE FROM ${T} WHERE name = 'tx2'`), 'delete')
  assert(d.get(0).getRowsAffected() === 1, `delete ${d.get(0).getRowsAffected()}`)
})

if (FOLLOWER) {
  await check('write through a follower-only client (server forwards)', async () => {
    const f = new DataApiClient(FOLLOWER, opts())
    noError(await f.execute([[`INSERT INTO ${T} (name) VALUES (?)`, 'via-follower']]), 'insert')
    const c = noError(await db.query(`SELECT COUNT(*) AS c FROM ${T} WHERE name = 'via-follower'`, { level: 'strong' }), 'count')
    assert(c.get(0).get('c') === 1, 'not visible on the leader')
  })
  await check('two-host client: level=none reads round-robin over leader and follower', async () => {
    const both = new DataApiClient([LEADER, FOLLOWER], opts())
    noError(await both.execute([[`INSERT INTO ${T} (name) VALUES (?)`, 'rr']]), 'insert')
    await eventually(async () => {
      for (let i = 0; i < 4; i += 1) {
        const c = noError(await both.query(`SELECT COUNT(*) AS c FROM ${T} WHERE name = 'rr'`, { level: 'none' }), 'count')
        assert(c.get(0).get('c') === 1, `read ${i} did not see the write`)
      }
    })
  })
}

if (USER) {
  await check('wrong password: axios throws with response.status 401', async () => {
    const bad = new DataApiClient(LEADER, opts('definitely-wrong'))
    try {
      await bad.query('SELECT 1')
    } catch (e) {
      assert(e.response && e.response.status === 401, `status ${e.response && e.response.status}`)
      return
    }
    throw new Error('no error with a wrong password')
  })
}

await check('DROP TABLE', async () => {
  noError(await db.execute(`DROP TABLE ${T}`), 'drop')
})

console.log(`${passed} passed, ${failed} failed`)
process.exit(failed ? 1 : 0)
