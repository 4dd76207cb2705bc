"""A persistent session with paho: python paho_session.py PORT PROTO

Subscribes with clean_session=False, disconnects, has messages published
while it is away (QoS 1 and 2), reconnects and prints `SESSION_PRESENT x`
and the messages it gets.
"""

import sys

from helpers import Client, msg_line, out, protocol

port, proto_name = int(sys.argv[1]), sys.argv[2]
proto = protocol(proto_name)
cid = "paho-sess-%s" % proto_name

first = Client(port, cid, proto, clean_session=False)
out("FIRST SESSION_PRESENT %s" % first.session_present)
out("GRANTED %s" % first.subscribe("paho/session/#", 2))
first.disconnect()

pub = Client(port, "paho-spub-%s" % proto_name, proto)
pub.publish("paho/session/a", "while away 1", 1)
pub.publish("paho/session/b", "while away 2", 2)
pub.publish("paho/session/c", "while away 3", 1)
pub.disconnect()

again = Client(port, cid, proto, clean_session=False)
out("SESSION_PRESENT %s" % again.session_present)
# QoS 2 messages reach on_message at PUBREL: print in topic order.
for m in sorted(again.expect(3), key=lambda m: m.topic):
    out(msg_line(m))
again.expect_none(0.5)
again.disconnect()

# Clean up the session: a clean connect drops it.
Client(port, cid, proto, clean_session=True).disconnect()
