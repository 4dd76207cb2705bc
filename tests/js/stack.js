// The home-automation stack with MQTT.js, as zigbee2mqtt and Node-RED use
// it: node stack.js MODE PORT PROTO ... (PROTO 4 for MQTT 3.1.1, 5 for 5.0;
// NODE_PATH holds the `mqtt` package). One line per event on stdout.
//
//   bridge PORT PROTO N     zigbee2mqtt: a retained will `offline` on its
//                           state topic, N retained QoS 1 discovery configs
//                           and a retained `online` on every connect; prints
//                           READY, then RECONNECTED after each reconnection.
//                           A message on test/break breaks its connection
//                           (MQTT.js reconnects by itself).
//   hub PORT PROTO ID CLEAN EVENTS
//                           a hub subscribing at QoS 1 to homeassistant/#
//                           and the bridge state (CLEAN 0: a persistent
//                           session, which subscribes only when the broker
//                           has no session for it). Counts what comes until
//                           nothing does for a while and prints CONFIGS
//                           (distinct), STATE, LIVE (distinct live updates),
//                           REPEATS (messages received twice without DUP) and
//                           COUNTED; then waits for EVENTS more state
//                           messages, printing each as EVENT, and ends.
"use strict";

const mqtt = require("mqtt");

const STATE = "zigbee2mqtt/bridge/state";
const QUIET_MS = 3000;
// Below the Receive Maximum midge and Mosquitto announce (20).
const WINDOW = 10;
const [mode, port, proto] = process.argv.slice(2, 5);
const args = process.argv.slice(5);

function out(line) {
  process.stdout.write(line + "\n");
}

function fail(msg) {
  process.stderr.write("FAIL: " + msg + "\n");
  process.exit(1);
}

function options(clientId, extra) {
  return Object.assign(
    {
      clientId,
      protocolVersion: Number(proto),
      reconnectPeriod: 300,
      connectTimeout: 20000,
    },
    extra,
  );
}

function configTopic(i) {
  return "homeassistant/sensor/0x" + i.toString(16).padStart(16, "0") + "/config";
}

function bridge(n) {
  const c = mqtt.connect(
    "mqtt://127.0.0.1:" + port,
    options("zigbee2mqtt", {
      will: { topic: STATE, payload: "offline", qos: 1, retain: true },
    }),
  );
  let connects = 0;
  c.on("error", (e) => fail("bridge: " + e.message));
  c.on("message", (topic) => {
    if (topic === "test/break") c.stream.destroy();
  });
  c.on("connect", async () => {
    connects += 1;
    await c.publishAsync(STATE, "online", { qos: 1, retain: true });
    if (connects > 1) {
      out("RECONNECTED");
      return;
    }
    await c.subscribeAsync("test/break", { qos: 1 });
    // A few at a time, as zigbee2mqtt awaits its publishes: MQTT.js 5.16
    // does not keep to the broker's Receive Maximum (MQTT 5), and a broker
    // that enforces it disconnects a client that sends more.
    for (let i = 0; i < n; i += WINDOW) {
      const sent = [];
      for (let j = i; j < Math.min(n, i + WINDOW); j++) {
        const body = JSON.stringify({ name: "sensor " + j, state_topic: "zigbee2mqtt/0x" + j });
        sent.push(c.publishAsync(configTopic(j), body, { qos: 1, retain: true }));
      }
      await Promise.all(sent);
    }
    out("READY");
  });
}

function hub(id, clean, events) {
  const c = mqtt.connect(
    "mqtt://127.0.0.1:" + port,
    options(id, { clean, reconnectPeriod: 0, resubscribe: false }),
  );
  const configs = new Set();
  const live = new Set();
  const seen = new Set();
  let repeats = 0;
  let state = "none";
  let counted = false;
  let left = events;
  let timer = null;
  let ending = false;
  const end = () => {
    ending = true;
    c.end(false, () => process.exit(0));
  };
  const finish = () => {
    out("CONFIGS " + configs.size);
    out("STATE " + state);
    out("LIVE " + live.size);
    out("REPEATS " + repeats);
    out("COUNTED");
    counted = true;
    if (left === 0) end();
  };
  const quiet = () => {
    clearTimeout(timer);
    timer = setTimeout(finish, QUIET_MS);
  };
  // A broker may reset a connection it is closing.
  c.on("error", (e) => ending || fail("hub: " + e.message));
  c.on("message", (topic, payload, packet) => {
    const text = payload.toString();
    const key = topic + " " + text;
    if (seen.has(key) && !packet.dup) repeats += 1;
    seen.add(key);
    if (topic === STATE) {
      state = text;
      if (counted) {
        out("EVENT " + text);
        left -= 1;
        if (left === 0) end();
      }
    } else if (topic.endsWith("/config")) {
      configs.add(topic);
    } else {
      live.add(key);
    }
    if (!counted) quiet();
  });
  c.on("connect", async (connack) => {
    out("SESSION_PRESENT " + (connack.sessionPresent ? 1 : 0));
    if (!connack.sessionPresent) {
      await c.subscribeAsync({ [STATE]: { qos: 1 }, "homeassistant/#": { qos: 1 } });
    }
    quiet();
  });
}

switch (mode) {
  case "bridge":
    bridge(Number(args[0]));
    break;
  case "hub":
    hub(args[0], args[1] !== "0", Number(args[2]));
    break;
  default:
    fail("unknown mode " + mode);
}
