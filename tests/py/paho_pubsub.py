"""paho subscriber and publisher at one QoS: python paho_pubsub.py PORT PROTO QOS

Prints `GRANTED [q]`, then one `MSG topic qN rN payload` line per message.
"""

import sys

from helpers import Client, msg_line, out, protocol

port, proto_name, qos = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
proto = protocol(proto_name)

sub = Client(port, "paho-sub-%s-%d" % (proto_name, qos), proto)
out("GRANTED %s" % sub.subscribe("paho/%d/#" % qos, qos))
pub = Client(port, "paho-pub-%s-%d" % (proto_name, qos), proto)
for i in range(1, 6):
    pub.publish("paho/%d/%d" % (qos, i), "message %d" % i, qos)
for m in sub.expect(5):
    out(msg_line(m))
sub.expect_none(0.5)
pub.disconnect()
sub.disconnect()
