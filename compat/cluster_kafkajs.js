#!/usr/bin/env node
// Produce or consume numbered records for compat/cluster.sh with kafkajs.
//
//   cluster_kafkajs.js produce TOPIC FROM COUNT
//   cluster_kafkajs.js consume TOPIC COUNT
//
// produce writes values "kafkajs-<n>" with acks=all (-1) and an idempotent
// producer; consume reads partition 0 from the beginning through a fresh
// consumer group and prints one value per line until COUNT arrived.
'use strict';

const { Kafka, logLevel } = require('kafkajs');

const brokers = (process.env.BOOTSTRAP || '').split(',');
const deadline = Date.now() + Number(process.env.STEP_TIMEOUT || 60) * 1000;
const [op, topic, a, b] = process.argv.slice(2);

const kafka = new Kafka({
  clientId: 'weir-compat-cluster',
  brokers,
  logLevel: logLevel.NOTHING,
  connectionTimeout: 3000,
  requestTimeout: 10000,
  retry: { retries: 20, initialRetryTime: 200, maxRetryTime: 2000 },
});

async function produce(from, count) {
  const p = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await p.connect();
  for (let n = from; n < from + count; n += 10) {
    const messages = [];
    for (let i = n; i < Math.min(n + 10, from + count); i++) {
      messages.push({ value: `kafkajs-${i}`, partition: 0 });
    }
    await p.send({ topic, acks: -1, messages });
  }
  await p.disconnect();
}

async function consume(count) {
  const c = kafka.consumer({ groupId: `cluster-compat-${process.pid}` });
  await c.connect();
  await c.subscribe({ topic, fromBeginning: true });
  let got = 0;
  await new Promise((resolve, reject) => {
    const timer = setInterval(() => {
      if (got >= count) { clearInterval(timer); resolve(); }
      if (Date.now() > deadline) { clearInterval(timer); reject(new Error(`only ${got} of ${count}`)); }
    }, 100);
    c.run({
      eachMessage: async ({ message }) => {
        if (got < count) {
          console.log(message.value.toString());
          got += 1;
        }
      },
    }).catch(reject);
  });
  await c.disconnect();
}

const work = op === 'produce' ? produce(Number(a), Number(b)) : consume(Number(a));
work.then(() => process.exit(0), (e) => {
  console.error(`${op} failed: ${e}`);
  process.exit(1);
});
