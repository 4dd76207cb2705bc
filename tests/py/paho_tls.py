"""paho-mqtt over TLS: tls_set with a CA file (and a client certificate),
subscribe, publish, print what comes back.

usage: paho_tls.py PORT HOST CAFILE [CERTFILE KEYFILE]   (empty for none)
"""

import sys

import paho.mqtt.client as mqtt

from helpers import Events, fail, msg_line, out

port, host, cafile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
certfile = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] else None
keyfile = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] else None

c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-tls")
c.tls_set(ca_certs=cafile, certfile=certfile, keyfile=keyfile)
ev = Events(c)
wait = ev.wait
c.connect(host, port, 60)
c.loop_start()

rc = wait("CONNACK")
if rc != 0:
    fail("refused: %s" % rc)
c.subscribe("paho/tls", 1)
wait("SUBACK")
c.publish("paho/tls", b"hello", 1)
out(msg_line(wait("MSG")))
c.disconnect()
c.loop_stop()
