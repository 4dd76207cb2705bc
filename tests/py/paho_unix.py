"""paho over a Unix socket listener: python paho_unix.py SOCKET_PATH TCP_PORT

A subscriber on the Unix socket gets QoS 1 messages from a publisher on
TCP, and a subscriber on TCP gets them from a publisher on the Unix
socket. Prints `GRANTED [q]` per subscription, then one
`MSG topic qN rN payload` line per message.
"""

import sys

from helpers import Client, msg_line, out, protocol

path, port = sys.argv[1], int(sys.argv[2])
proto = protocol("311")

unix_sub = Client(port, "paho-unix-sub", proto, unix_path=path)
out("GRANTED %s" % unix_sub.subscribe("unix/in/#", 1))
tcp_sub = Client(port, "paho-tcp-sub", proto)
out("GRANTED %s" % tcp_sub.subscribe("unix/out/#", 1))

tcp_pub = Client(port, "paho-tcp-pub", proto)
unix_pub = Client(port, "paho-unix-pub", proto, unix_path=path)
for i in range(1, 4):
    tcp_pub.publish("unix/in/%d" % i, "to unix %d" % i, 1)
    unix_pub.publish("unix/out/%d" % i, "from unix %d" % i, 1)
for m in unix_sub.expect(3):
    out(msg_line(m))
for m in tcp_sub.expect(3):
    out(msg_line(m))
for c in (tcp_pub, unix_pub, tcp_sub, unix_sub):
    c.disconnect()
