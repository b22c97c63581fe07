#!/usr/bin/env node
// weir compatibility check: kafkajs (pure-JavaScript client).
//
// Needs env BOOTSTRAP=host:port. Exits 0 only when every check passed; prints
// each check as "ok:" or "FAIL:" and a summary of the failures at the end.
//
// kafkajs can only consume through consumer groups, so the default run checks
// what was written via admin.fetchTopicOffsets. With KAFKAJS_GROUPS=1 an extra
// section consumes everything back through a consumer group.
'use strict';

const { Kafka, logLevel, CompressionTypes, Partitioners } = require('kafkajs');

const BOOTSTRAP = process.env.BOOTSTRAP;
if (!BOOTSTRAP) {
  console.error('set BOOTSTRAP=host:port');
  process.exit(2);
}
const TOPIC = `weir-compat-kafkajs-${process.pid}-${Math.floor(Date.now() / 1000)}`;
const PARTITIONS = 2;
const N = 200;
const GROUPS = process.env.KAFKAJS_GROUPS === '1';
const OVERALL_TIMEOUT_MS = Number(process.env.OVERALL_TIMEOUT || 100) * 1000;
const POLL_WINDOW_MS = 30000;

let checks = 0;
const failures = [];
let created = false; // true while the topic may exist and needs cleanup

class Abort extends Error {}

function ok(msg) {
  checks += 1;
  console.log(`ok:   ${msg}`);
}
function fail(msg, fatal = false) {
  checks += 1;
  failures.push(msg);
  console.log(`FAIL: ${msg}`);
  if (fatal) throw new Abort(msg);
}
function check(cond, msg, detail = '', fatal = false) {
  if (cond) ok(msg);
  else fail(detail ? `${msg} -- ${detail}` : msg, fatal);
  return cond;
}
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
const errStr = (e) => (e && (e.stack || e.message)) || String(e);

function finish() {
  console.log('');
  if (failures.length) {
    console.log(`kafkajs: ${failures.length} of ${checks} checks FAILED:`);
    for (const f of failures) console.log(`  - ${f}`);
    process.exit(1);
  }
  console.log(`kafkajs: all ${checks} checks passed`);
  process.exit(0);
}

setTimeout(() => {
  console.log(`FAIL: overall timeout of ${OVERALL_TIMEOUT_MS / 1000}s reached; ` +
    `failures so far: ${JSON.stringify(failures)}`);
  process.exit(2);
}, OVERALL_TIMEOUT_MS);
process.on('unhandledRejection', (e) => {
  console.log(`FAIL: unhandled rejection: ${errStr(e)}`);
  process.exit(2);
});

const kafka = new Kafka({
  clientId: 'weir-compat-kafkajs',
  brokers: [BOOTSTRAP],
  logLevel: logLevel.WARN,
  connectionTimeout: 5000,
  requestTimeout: 15000,
  retry: { retries: 3, initialRetryTime: 200, maxRetryTime: 2000 },
});

function record(i) {
  return {
    key: `key-${i}`,
    value: `value-${i}`,
    headers: { idx: String(i), client: 'kafkajs' },
  };
}

async function run(admin, producer) {
  // --- admin: createTopics + fetchTopicMetadata ----------------------------------
  await admin.connect();
  ok('admin connected');
  try {
    const res = await admin.createTopics({
      topics: [{ topic: TOPIC, numPartitions: PARTITIONS, replicationFactor: 1 }],
      waitForLeaders: true,
      timeout: 10000,
    });
    created = true;
    check(res === true, `createTopics ${TOPIC} (${PARTITIONS} partitions)`,
      `returned ${res} (false means it already existed)`);
  } catch (e) {
    fail(`createTopics failed: ${errStr(e)}`, true);
  }
  try {
    const md = await admin.fetchTopicMetadata({ topics: [TOPIC] });
    const t = md.topics.find((x) => x.name === TOPIC);
    check(t && t.partitions.length === PARTITIONS,
      `fetchTopicMetadata shows ${PARTITIONS} partitions`, JSON.stringify(md.topics));
    if (t) {
      check(t.partitions.every((p) => p.leader >= 0 && p.partitionErrorCode === 0),
        'every partition has a leader and no error', JSON.stringify(t.partitions));
    }
  } catch (e) {
    fail(`fetchTopicMetadata failed: ${errStr(e)}`);
  }

  // --- idempotent producer, half the records GZIP-compressed ---------------------------
  await producer.connect();
  ok('idempotent producer connected (InitProducerId)');
  const half = N / 2;
  const batches = [
    { label: 'uncompressed', from: 0, to: half, compression: CompressionTypes.None },
    { label: 'GZIP', from: half, to: N, compression: CompressionTypes.GZIP },
  ];
  for (const b of batches) {
    const messages = [];
    for (let i = b.from; i < b.to; i += 1) messages.push(record(i));
    try {
      const res = await producer.send({
        topic: TOPIC, messages, acks: -1, compression: b.compression, timeout: 15000,
      });
      const bad = res.filter((r) => r.errorCode !== 0);
      check(bad.length === 0, `send ${messages.length} ${b.label} records (acks=-1)`,
        JSON.stringify(res));
    } catch (e) {
      fail(`send of ${b.label} records failed: ${errStr(e)}`);
    }
  }

  // --- fetchTopicOffsets: the high watermarks sum to N --------------------------------
  try {
    const offs = await admin.fetchTopicOffsets(TOPIC);
    const high = offs.reduce((s, p) => s + Number(p.high), 0);
    check(offs.length === PARTITIONS, `fetchTopicOffsets returns ${PARTITIONS} partitions`,
      JSON.stringify(offs));
    check(high === N, `high watermarks sum to ${N}`, `got ${high}: ${JSON.stringify(offs)}`);
    check(offs.every((p) => Number(p.low) === 0), 'low watermarks are 0', JSON.stringify(offs));
    check(offs.every((p) => Number(p.high) > 0), 'records landed in every partition',
      JSON.stringify(offs));
  } catch (e) {
    fail(`fetchTopicOffsets failed: ${errStr(e)}`);
  }
  try {
    const byTs = await admin.fetchTopicOffsetsByTimestamp(TOPIC, 0);
    check(byTs.length === PARTITIONS && byTs.every((p) => Number(p.offset) === 0),
      'fetchTopicOffsetsByTimestamp(0) = offset 0 in every partition', JSON.stringify(byTs));
  } catch (e) {
    fail(`fetchTopicOffsetsByTimestamp failed: ${errStr(e)}`);
  }

  // --- OPTIONAL: consume through a consumer group (KAFKAJS_GROUPS=1) -------------------
  if (GROUPS) {
    console.log('--- optional section: consumer group (KAFKAJS_GROUPS=1) ---');
    await consumeViaGroup();
  } else {
    console.log('--- skipped optional consumer-group section (set KAFKAJS_GROUPS=1) ---');
  }

  // --- deleteTopics ----------------------------------------------------------------------
  try {
    await admin.deleteTopics({ topics: [TOPIC], timeout: 10000 });
    created = false;
    ok('deleteTopics');
  } catch (e) {
    fail(`deleteTopics failed: ${errStr(e)}`);
    return;
  }
  let present = true;
  const deadline = Date.now() + 10000;
  while (Date.now() < deadline) {
    present = (await admin.listTopics()).includes(TOPIC);
    if (!present) break;
    await sleep(300);
  }
  check(!present, 'listTopics no longer shows the deleted topic');
}

async function consumeViaGroup() {
  const consumer = kafka.consumer({
    groupId: `weir-compat-group-${TOPIC}`,
    sessionTimeout: 10000,
    rebalanceTimeout: 10000,
    heartbeatInterval: 1000,
    maxWaitTimeInMs: 500,
    retry: { retries: 2, initialRetryTime: 200, maxRetryTime: 2000 },
  });
  let crashed = null;
  consumer.on(consumer.events.CRASH, (ev) => {
    crashed = ev.payload && ev.payload.error;
  });
  const got = new Map();
  const bad = [];
  try {
    await withTimeout(consumer.connect(), 15000, 'consumer.connect');
    await withTimeout(consumer.subscribe({ topics: [TOPIC], fromBeginning: true }), 15000,
      'consumer.subscribe');
    await withTimeout(consumer.run({
      eachMessage: async ({ partition, message }) => {
        const key = message.key && message.key.toString();
        const i = key && key.startsWith('key-') ? Number(key.slice(4)) : NaN;
        if (Number.isNaN(i)) {
          bad.push(`unexpected key ${key} at ${partition}/${message.offset}`);
          return;
        }
        if (got.has(i)) bad.push(`duplicate key-${i}`);
        got.set(i, message);
      },
    }), 15000, 'consumer.run');
    const deadline = Date.now() + POLL_WINDOW_MS;
    while (got.size < N && !crashed && Date.now() < deadline) await sleep(200);
    check(!crashed, 'group consumer did not crash', crashed ? errStr(crashed) : '');
    check(bad.length === 0, 'group consumer saw no unexpected or duplicate records',
      bad.slice(0, 5).join('; '));
    check(got.size === N, `group consumer read all ${N} records (fromBeginning)`,
      `read ${got.size} in ${POLL_WINDOW_MS / 1000}s`);
    const mism = [];
    for (const [i, m] of got) {
      const want = record(i);
      const h = m.headers || {};
      if (String(m.value) !== want.value || String(h.idx) !== want.headers.idx ||
          String(h.client) !== want.headers.client) {
        mism.push(`key-${i}: value=${m.value} headers=${JSON.stringify(
          Object.fromEntries(Object.entries(h).map(([k, v]) => [k, String(v)])))}`);
      }
    }
    check(mism.length === 0, 'group-consumed values and headers match (incl. GZIP batch)',
      `${mism.length} mismatches, e.g. ${mism.slice(0, 3).join('; ')}`);
  } catch (e) {
    fail(`consumer group section failed: ${errStr(e)}`);
  } finally {
    await withTimeout(consumer.disconnect(), 10000, 'consumer.disconnect').catch(() => {});
  }
}

async function main() {
  console.log(`kafkajs ${require('kafkajs/package.json').version}, node ${process.version}`);
  console.log(`bootstrap: ${BOOTSTRAP}  topic: ${TOPIC}`);
  const admin = kafka.admin();
  const producer = kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    allowAutoTopicCreation: false,
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  try {
    await run(admin, producer);
  } catch (e) {
    if (e instanceof Abort) console.log(`aborting remaining steps: ${e.message}`);
    else fail(`unexpected exception: ${errStr(e)}`);
  } finally {
    if (created) {
      await withTimeout(admin.deleteTopics({ topics: [TOPIC], timeout: 5000 }), 8000,
        'cleanup deleteTopics').catch(() => {});
    }
    await withTimeout(producer.disconnect(), 5000, 'producer.disconnect').catch(() => {});
    await withTimeout(admin.disconnect(), 5000, 'admin.disconnect').catch(() => {});
  }
  finish();
}

main();
