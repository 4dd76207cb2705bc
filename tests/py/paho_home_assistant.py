"""Home Assistant and a zigbee2mqtt-like bridge, with paho-mqtt as Home
Assistant uses it: python paho_home_assistant.py PORT N

The bridge connects with a retained will `offline` on its state topic,
publishes N retained QoS 1 discovery configs and its retained `online`
state, and republishes every config whenever it sees Home Assistant's
birth message (`online` on homeassistant/status).

Then Home Assistant connects with a persistent session, subscribes to its
discovery prefix and the bridge state at QoS 1, and counts what it gets
until nothing more comes for a while (a broker may stop short); then it
publishes its birth message and counts the republished configs.

Prints `CONFIGS n`, `RETAIN_FLAGS n` (how many of them had retain set),
`STATE payload` and `REPUBLISHED n`.
"""

import sys

import paho.mqtt.client as mqtt

from helpers import Client, fail, out

QUIET = 3.0

port, n = int(sys.argv[1]), int(sys.argv[2])
STATE = "zigbee2mqtt/bridge/state"


def config_topic(i):
    return "homeassistant/sensor/0x%016x/config" % i


bridge = Client(port, "zigbee2mqtt", mqtt.MQTTv311, will=(STATE, "offline", 1, True))
bridge.subscribe("homeassistant/status", 1)


def republish(client, userdata, m):
    if m.topic == "homeassistant/status" and m.payload == b"online":
        for i in range(n):
            client.publish(config_topic(i), '{"name":"sensor %d","again":true}' % i, 1, True)


infos = [
    bridge.c.publish(config_topic(i), '{"name":"sensor %d"}' % i, 1, True) for i in range(n)
]
infos.append(bridge.c.publish(STATE, "online", 1, True))
for info in infos:
    info.wait_for_publish(timeout=60)
    if not info.is_published():
        fail("bridge: publish not completed")
bridge.c.on_message = republish

hub = Client(port, "homeassistant", mqtt.MQTTv311, clean_session=False)
hub.subscribe(STATE, 1)
hub.subscribe("homeassistant/#", 1)


got = hub.rest(QUIET)
configs = [m for m in got if m.topic.startswith("homeassistant/sensor/")]
out("CONFIGS %d" % len(set(m.topic for m in configs)))
out("RETAIN_FLAGS %d" % sum(1 for m in configs if m.retain))
states = [m.payload.decode() for m in got if m.topic == STATE]
out("STATE %s" % (states[-1] if states else "none"))

hub.publish("homeassistant/status", "online", 0, False)
again = [m for m in hub.rest(QUIET) if b'"again":true' in m.payload]
out("REPUBLISHED %d" % len(set(m.topic for m in again)))
hub.disconnect()
bridge.disconnect()
Client(port, "homeassistant", mqtt.MQTTv311, clean_session=True).disconnect()
