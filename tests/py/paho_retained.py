"""Retained messages with paho: python paho_retained.py PORT PROTO

Prints the message a late subscriber gets (`MSG ...`), then `NONE` when a
subscriber after the clearing gets nothing.
"""

import sys

from helpers import Client, msg_line, out, protocol

port, proto_name = int(sys.argv[1]), sys.argv[2]
proto = protocol(proto_name)
topic = "paho/retained/%s" % proto_name

pub = Client(port, "paho-rpub-%s" % proto_name, proto)
pub.publish(topic, "first", 1, retain=True)
pub.publish(topic, "keep me", 1, retain=True)

late = Client(port, "paho-rlate-%s" % proto_name, proto)
late.subscribe("paho/retained/#", 1)
for m in late.expect(1):
    out(msg_line(m))
late.expect_none(0.5)
late.disconnect()

pub.publish(topic, "", 1, retain=True)
after = Client(port, "paho-rafter-%s" % proto_name, proto)
after.subscribe("paho/retained/#", 1)
after.expect_none(1.0)
out("NONE")
after.disconnect()
pub.disconnect()
