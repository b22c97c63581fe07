#!/usr/bin/env node
// weir compatibility check: kafkajs (pure-JavaScript client).
//
// Needs env BOOTSTRAP=host:port. Exits 0 only when every check passed; prints
// each check as "ok:" or "FAIL:" and a summary of the failures at the end.
//
// kafkajs can only consume through consumer groups: what was written is checked
// via admin.fetchTopicOffsets, then read back by a consumer group
// (fromBeginning), whose committed offsets and state are checked through the
// admin API (describeGroups, listGroups, fetchOffsets, deleteGroups).
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
const OVERALL_TIMEOUT_MS = Number(process.env.OVERALL_TIMEOUT || 100) * 1000;
const POLL_WINDOW_MS = 30000;

const { Abort, checks, errStr, sleep, withTimeout } = require('./checks');
const { ok, fail, check, finish } = checks('kafkajs', OVERALL_TIMEOUT_MS);
let created = false; // true while the topic may exist and needs cleanup

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

  // --- consume through a consumer group, commit, inspect the group ---------------------
  await consumeViaGroup(admin);

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

async function consumeViaGroup(admin) {
  const groupId = `weir-compat-group-${TOPIC}`;
  const consumer = kafka.consumer({
    groupId,
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
  const next = {}; // partition -> offset after the last record read
  let connected = false;
  try {
    await withTimeout(consumer.connect(), 15000, 'consumer.connect');
    connected = true;
    await withTimeout(consumer.subscribe({ topics: [TOPIC], fromBeginning: true }), 15000,
      'consumer.subscribe');
    await withTimeout(consumer.run({
      autoCommit: false, // committed explicitly below
      eachMessage: async ({ partition, message }) => {
        const off = Number(message.offset);
        if (next[partition] === undefined || off + 1 > next[partition]) next[partition] = off + 1;
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

    // --- OffsetCommit of the position after the last record, per partition -------------
    const toCommit = Object.entries(next).map(([p, o]) => (
      { topic: TOPIC, partition: Number(p), offset: String(o) }));
    try {
      await withTimeout(consumer.commitOffsets(toCommit), 15000, 'consumer.commitOffsets');
      ok(`commitOffsets ${JSON.stringify(next)}`);
    } catch (e) {
      fail(`commitOffsets failed: ${errStr(e)}`);
    }

    // --- the admin API sees the live group ---------------------------------------------
    try {
      const { groups } = await withTimeout(admin.describeGroups([groupId]), 15000,
        'admin.describeGroups');
      const g = groups.find((x) => x.groupId === groupId);
      check(g && g.errorCode === 0 && g.state === 'Stable' && g.protocolType === 'consumer' &&
        g.members.length === 1,
        'describeGroups: group is Stable, protocolType consumer, 1 member',
        JSON.stringify(g && { ...g, members: g.members.map((m) => m.memberId) }));
      if (g && g.members.length === 1) {
        check(g.protocol !== '' && g.members[0].clientId === 'weir-compat-kafkajs',
          `describeGroups: assignor "${g.protocol}" and member clientId reported`,
          `protocol=${JSON.stringify(g.protocol)} clientId=${JSON.stringify(g.members[0].clientId)}`);
      }
    } catch (e) {
      fail(`describeGroups failed: ${errStr(e)}`);
    }
    try {
      const { groups } = await withTimeout(admin.listGroups(), 15000, 'admin.listGroups');
      const g = groups.find((x) => x.groupId === groupId);
      check(g && g.protocolType === 'consumer', 'listGroups shows the group (protocolType consumer)',
        JSON.stringify(groups));
    } catch (e) {
      fail(`listGroups failed: ${errStr(e)}`);
    }
    await checkFetchOffsets(admin, groupId, 'while the consumer runs');
  } catch (e) {
    fail(`consumer group section failed: ${errStr(e)}`);
  } finally {
    if (connected) {
      try {
        await withTimeout(consumer.disconnect(), 10000, 'consumer.disconnect');
      } catch (e) {
        fail(`consumer.disconnect failed: ${errStr(e)}`);
      }
    }
  }
  if (!connected) return;

  // --- after LeaveGroup: Empty group keeps its offsets; then DeleteGroups --------------
  try {
    let g = null;
    const deadline = Date.now() + 10000;
    while (Date.now() < deadline) {
      const { groups } = await withTimeout(admin.describeGroups([groupId]), 15000,
        'admin.describeGroups');
      g = groups.find((x) => x.groupId === groupId);
      if (g && g.state === 'Empty') break;
      await sleep(300);
    }
    check(g && g.state === 'Empty' && g.members.length === 0,
      'describeGroups after disconnect (LeaveGroup): Empty, no members', JSON.stringify(g));
  } catch (e) {
    fail(`describeGroups after disconnect failed: ${errStr(e)}`);
  }
  await checkFetchOffsets(admin, groupId, 'after the consumer left');
  try {
    await withTimeout(admin.deleteGroups([groupId]), 15000, 'admin.deleteGroups');
    ok('deleteGroups');
    const { groups } = await withTimeout(admin.listGroups(), 15000, 'admin.listGroups');
    check(!groups.some((x) => x.groupId === groupId), 'listGroups no longer shows the deleted group',
      JSON.stringify(groups));
  } catch (e) {
    fail(`deleteGroups failed: ${errStr(e)}`);
  }
}

// admin.fetchOffsets shows the committed offsets = the high watermarks.
async function checkFetchOffsets(admin, groupId, when) {
  try {
    const high = {};
    for (const p of await admin.fetchTopicOffsets(TOPIC)) high[p.partition] = Number(p.high);
    const res = await withTimeout(admin.fetchOffsets({ groupId, topics: [TOPIC] }), 15000,
      'admin.fetchOffsets');
    const t = res.find((x) => x.topic === TOPIC);
    const committed = {};
    for (const p of (t ? t.partitions : [])) committed[p.partition] = Number(p.offset);
    check(JSON.stringify(committed) === JSON.stringify(high),
      `fetchOffsets ${when}: committed offsets = high watermarks`,
      `committed ${JSON.stringify(committed)}, high watermarks ${JSON.stringify(high)}`);
  } catch (e) {
    fail(`fetchOffsets ${when} failed: ${errStr(e)}`);
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
