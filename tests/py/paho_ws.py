"""paho-mqtt over WebSockets (transport="websockets"), plain or TLS:
subscribe, publish a small and a large message (the large one spans many
frames both ways), print what comes back, then print every further message
until COUNT more have come (published by the test over plain TCP).

usage: paho_ws.py PORT HOST CAFILE USER PASSWORD TOPIC COUNT
       (CAFILE, USER, PASSWORD empty for none)
"""

import sys

import paho.mqtt.client as mqtt

from helpers import Events, fail, msg_line, out

port, host, cafile, user, password, topic, count = sys.argv[1:8]
port, count = int(port), int(count)

c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-ws", transport="websockets")
c.ws_set_options(path="/mqtt")
if cafile:
    c.tls_set(ca_certs=cafile)
if user:
    c.username_pw_set(user, password)
ev = Events(c)
c.connect(host, port, 60)
c.loop_start()

rc = ev.wait("CONNACK")
if rc != 0:
    fail("refused: %s" % rc)
c.subscribe(topic, 1)
granted = ev.wait("SUBACK")
if granted != [1]:
    fail("SUBACK %s" % granted)
c.publish(topic, b"hello over websockets", 1)
out(msg_line(ev.wait("MSG")))
big = bytes(i % 251 for i in range(200000))
c.publish(topic, big, 1)
m = ev.wait("MSG")
out("BIG %d %s" % (len(m.payload), "same" if m.payload == big else "different"))
out("READY")
for _ in range(count):
    out(msg_line(ev.wait("MSG")))
c.disconnect()
c.loop_stop()
