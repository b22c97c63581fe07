#!/usr/bin/env node
// weir security check: kafkajs over SASL_SSL.
//
// Run by compat/security.sh against the broker it starts. As the super user
// admin with SCRAM-SHA-256 and the test CA (ssl: { ca }): create a topic,
// produce one record and read it back through a consumer group; connect with
// PLAIN and SCRAM-SHA-512 too; then a wrong password (SCRAM-SHA-256 and PLAIN)
// must be rejected with KafkaJSSASLAuthenticationError, no sooner than the
// broker's failed-authentication delay.
//
// Environment: BOOTSTRAP_SASL_SSL, CA_FILE, ADMIN_PASSWORD,
// SASL_FAILURE_DELAY_MS (default 500). Prints each check as "ok:" or "FAIL:"
// and exits non-zero when any failed.
'use strict';

const fs = require('fs');
const { Kafka, logLevel } = require('kafkajs');

function env(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`set ${name}`);
    process.exit(2);
  }
  return v;
}

const BOOTSTRAP = env('BOOTSTRAP_SASL_SSL');
const CA = fs.readFileSync(env('CA_FILE'), 'utf8');
const ADMIN_PASSWORD = env('ADMIN_PASSWORD');
const FAILURE_DELAY_MS = Number(process.env.SASL_FAILURE_DELAY_MS || 500);
const TOPIC = `weir-compat-security-kafkajs-${process.pid}-${Math.floor(Date.now() / 1000)}`;
const OVERALL_TIMEOUT_MS = Number(process.env.OVERALL_TIMEOUT || 60) * 1000;

const { Abort, checks, errStr, withTimeout } = require('./checks');
const { ok, fail, check, finish } = checks('security-kafkajs', OVERALL_TIMEOUT_MS);

// The error and its causes, as "Name: message" strings.
function chain(e) {
  const out = [];
  for (let x = e, depth = 0; x && depth < 6; x = x.cause || x.originalError, depth += 1) {
    out.push(`${x.name || 'Error'}: ${x.message || String(x)}`);
    if (x.cause === x) break;
  }
  return out;
}

function client(mechanism, username, password, quiet = false) {
  return new Kafka({
    clientId: 'weir-compat-security-kafkajs',
    brokers: [BOOTSTRAP],
    ssl: { ca: [CA] },
    sasl: { mechanism, username, password },
    logLevel: quiet ? logLevel.NOTHING : logLevel.WARN,
    connectionTimeout: 5000,
    authenticationTimeout: 10000,
    requestTimeout: 15000,
    retry: { retries: quiet ? 0 : 3, initialRetryTime: 200, maxRetryTime: 2000 },
  });
}

async function produceAndConsume(kafka) {
  const admin = kafka.admin();
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  const groupId = `${TOPIC}-group`;
  const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 1000 });
  try {
    await withTimeout(admin.connect(), 15000, 'admin.connect');
    ok('admin connected (SASL_SSL, SCRAM-SHA-256, CA from CA_FILE)');
    await withTimeout(admin.createTopics({
      topics: [{ topic: TOPIC, numPartitions: 1, replicationFactor: 1 }],
      waitForLeaders: true,
      timeout: 10000,
    }), 20000, 'admin.createTopics');
    ok(`createTopics ${TOPIC}`);

    await withTimeout(producer.connect(), 15000, 'producer.connect');
    const res = await withTimeout(producer.send({
      topic: TOPIC,
      acks: -1,
      messages: [{ key: 'k', value: 'security-kafkajs' }],
    }), 20000, 'producer.send');
    check(res.length === 1 && res[0].errorCode === 0, 'produced one record', JSON.stringify(res));

    await withTimeout(consumer.connect(), 15000, 'consumer.connect');
    await withTimeout(consumer.subscribe({ topics: [TOPIC], fromBeginning: true }), 15000,
      'consumer.subscribe');
    const got = await withTimeout(new Promise((resolve, reject) => {
      consumer.on(consumer.events.CRASH, (ev) => reject(ev.payload.error));
      consumer.run({
        eachMessage: async ({ message }) => resolve(message),
      }).catch(reject);
    }), 30000, 'consuming the record');
    check(got.key.toString() === 'k' && got.value.toString() === 'security-kafkajs',
      `consumed it back in group ${groupId}`,
      `key=${got.key} value=${got.value}`);
  } finally {
    await withTimeout(consumer.disconnect(), 10000, 'consumer.disconnect').catch(() => {});
    await withTimeout(producer.disconnect(), 5000, 'producer.disconnect').catch(() => {});
    await withTimeout(admin.disconnect(), 5000, 'admin.disconnect').catch(() => {});
  }
}

async function listWith(mechanism) {
  const admin = client(mechanism, 'admin', ADMIN_PASSWORD).admin();
  try {
    await withTimeout(admin.connect(), 15000, 'admin.connect');
    const topics = await withTimeout(admin.listTopics(), 15000, 'admin.listTopics');
    check(topics.includes(TOPIC), `${mechanism}: admin connects and listTopics shows ${TOPIC}`,
      JSON.stringify(topics));
  } catch (e) {
    fail(`${mechanism}: admin could not connect or list topics: ${errStr(e)}`);
  } finally {
    await withTimeout(admin.disconnect(), 5000, 'admin.disconnect').catch(() => {});
  }
}

async function wrongPassword(mechanism) {
  const producer = client(mechanism, 'admin', 'not-the-password', true).producer();
  const start = Date.now();
  try {
    await withTimeout(producer.connect(), 20000, 'producer.connect');
    fail(`${mechanism}: a wrong password was accepted`);
  } catch (e) {
    const elapsed = Date.now() - start;
    const c = chain(e);
    const sasl = c.some((s) => /KafkaJSSASLAuthenticationError/.test(s));
    check(sasl, `${mechanism}: a wrong password is rejected with KafkaJSSASLAuthenticationError ` +
      `(${elapsed} ms)`, c.join(' <- '));
    if (sasl) {
      console.log(`      ${c[c.length - 1]}`);
      check(elapsed >= FAILURE_DELAY_MS - 20,
        `${mechanism}: the rejection comes after the ${FAILURE_DELAY_MS} ms failure delay`,
        `it came after ${elapsed} ms`);
    }
  } finally {
    await withTimeout(producer.disconnect(), 5000, 'producer.disconnect').catch(() => {});
  }
}

async function main() {
  console.log(`kafkajs ${require('kafkajs/package.json').version}, node ${process.version}`);
  console.log(`bootstrap: ${BOOTSTRAP}  topic: ${TOPIC}`);
  try {
    try {
      await produceAndConsume(client('scram-sha-256', 'admin', ADMIN_PASSWORD));
    } catch (e) {
      if (e instanceof Abort) throw e;
      fail(`SCRAM-SHA-256 produce/consume failed: ${errStr(e)}`);
    }
    await listWith('plain');
    await listWith('scram-sha-512');
    await wrongPassword('scram-sha-256');
    await wrongPassword('plain');
  } catch (e) {
    if (e instanceof Abort) console.log(`aborting remaining steps: ${e.message}`);
    else fail(`unexpected exception: ${errStr(e)}`);
  } finally {
    const admin = client('scram-sha-256', 'admin', ADMIN_PASSWORD, true).admin();
    await withTimeout(admin.connect(), 10000, 'cleanup connect')
      .then(() => withTimeout(admin.deleteTopics({ topics: [TOPIC], timeout: 5000 }), 8000,
        'cleanup deleteTopics'))
      .catch(() => {});
    await withTimeout(admin.disconnect(), 5000, 'admin.disconnect').catch(() => {});
  }
  finish();
}

main();
