// The check harness shared by the kafkajs scripts: each check prints "ok:"
// or "FAIL:", a fatal failure aborts the remaining steps, and finish() prints
// the summary and exits 0 only when every check passed. An overall timeout
// and unhandled rejections exit 2.
'use strict';

class Abort extends Error {}

const errStr = (e) => (e && (e.stack || e.message)) || String(e);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, rej) => {
      t = setTimeout(() => rej(new Error(`${what} did not finish within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

// A run of checks named `name`, given `timeoutMs` in all.
function checks(name, timeoutMs) {
  let count = 0;
  const failures = [];
  const ok = (msg) => {
    count += 1;
    console.log(`ok:   ${msg}`);
  };
  const fail = (msg, fatal = false) => {
    count += 1;
    failures.push(msg);
    console.log(`FAIL: ${msg}`);
    if (fatal) throw new Abort(msg);
  };
  const check = (cond, msg, detail = '', fatal = false) => {
    if (cond) ok(msg);
    else fail(detail ? `${msg} -- ${detail}` : msg, fatal);
    return cond;
  };
  const finish = () => {
    console.log('');
    if (failures.length) {
      console.log(`${name}: ${failures.length} of ${count} checks FAILED:`);
      for (const f of failures) console.log(`  - ${f}`);
      process.exit(1);
    }
    console.log(`${name}: all ${count} checks passed`);
    process.exit(0);
  };
  setTimeout(() => {
    console.log(`FAIL: overall timeout of ${timeoutMs / 1000}s reached; ` +
      `failures so far: ${JSON.stringify(failures)}`);
    process.exit(2);
  }, timeoutMs);
  process.on('unhandledRejection', (e) => {
    console.log(`FAIL: unhandled rejection: ${errStr(e)}`);
    process.exit(2);
  });
  return { ok, fail, check, finish };
}

module.exports = { Abort, checks, errStr, sleep, withTimeout };
