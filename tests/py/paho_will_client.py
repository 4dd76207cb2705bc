"""A paho client with a will: python paho_will_client.py PORT PROTO QOS RETAIN MODE

Will: topic `paho/will/PROTO`, payload `gone PROTO`. Prints `CONNECTED`.
MODE `hang`: then waits to be killed (the test kills it: the socket closes
without DISCONNECT). MODE `disconnect`: sends DISCONNECT, prints
`DISCONNECTED` and exits.
"""

import sys
import time

from helpers import Client, out, protocol

port, proto_name, qos, retain, mode = (
    int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5])
proto = protocol(proto_name)

c = Client(port, "paho-will-%s" % proto_name, proto,
           will=("paho/will/%s" % proto_name, "gone %s" % proto_name, qos, retain))
out("CONNECTED")
if mode == "hang":
    time.sleep(600)
elif mode == "disconnect":
    c.disconnect()
    out("DISCONNECTED")
else:
    sys.exit("unknown mode %r" % mode)
