// MQTT.js over WebSocket against the broker at URL.
//
// Usage: node mqttjs_ws.js ws://HOST:PORT/mqtt {4|5}   (4 is MQTT 3.1.1)
//
// Subscribes to mqttjs/# at QoS 2, publishes one message at each QoS to itself, and prints
// "received 0 1 2" once the three came back, each at the QoS it was sent with, and every
// publish was acknowledged. Exits 1 on anything else within 10 seconds.
const mqtt = require('mqtt');

const [url, version] = process.argv.slice(2);
const client = mqtt.connect(url, {
  protocolVersion: Number(version),
  clientId: `mqttjs-ws-v${version}`,
  reconnectPeriod: 0,
  connectTimeout: 10000,
});
const received = {};
let acked = 0;
const timer = setTimeout(() => {
  console.log('timed out:', JSON.stringify(received), 'acked', acked);
  process.exit(1);
}, 10000);

function check() {
  if (Object.keys(received).length === 3 && acked === 3) {
    const expected = { 'mqttjs/q0': 0, 'mqttjs/q1': 1, 'mqttjs/q2': 2 };
    if (JSON.stringify(received) !== JSON.stringify(expected)) {
      console.log('got', JSON.stringify(received));
      process.exit(1);
    }
    console.log('received 0 1 2');
    clearTimeout(timer);
    client.end(false, () => process.exit(0));
  }
}

client.on('error', (error) => {
  console.log('error:', error.message);
  process.exit(1);
});
client.on('message', (topic, payload, packet) => {
  received[topic] = packet.qos;
  check();
});
client.on('connect', () => {
  client.subscribe('mqttjs/#', { qos: 2 }, (error, granted) => {
    if (error || granted[0].qos !== 2) {
      console.log('subscribe failed:', error, JSON.stringify(granted));
      process.exit(1);
    }
    for (const qos of [0, 1, 2]) {
      client.publish(`mqttjs/q${qos}`, `from MQTT.js at QoS ${qos}`, { qos }, (err) => {
        if (err) {
          console.log('publish failed:', err.message);
          process.exit(1);
        }
        acked += 1;
        check();
      });
    }
  });
});
