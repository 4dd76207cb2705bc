"""MQTT 5 scenarios with paho-mqtt 2.1: python paho_v5.py SCENARIO PORT [ARGS...]

Each scenario drives a few paho clients and prints what they observed, one
line per event, prefixed with the client's name; tests/mqtt5_paho.rs
compares the lines. A message is printed as

    NAME MSG TOPIC qQOS rRETAIN PAYLOAD [| PROPERTY=VALUE ...]

with its MQTT 5 properties in a fixed order (see `props_text`). A script
exits non-zero (FAIL on stderr) when something it waited for did not come.
"""

import queue
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from helpers import TIMEOUT, Client, fail, out

# How long to watch for a message that must not come.
QUIET = 0.7

# Received properties, in the order they are printed.
SHOWN = [
    ("PayloadFormatIndicator", "pfi"),
    ("MessageExpiryInterval", "exp"),
    ("ContentType", "ct"),
    ("ResponseTopic", "rt"),
    ("CorrelationData", "cd"),
    ("TopicAlias", "alias"),
    ("SubscriptionIdentifier", "sid"),
    ("UserProperty", "user"),
]


def props_text(p):
    """The properties of a received message, e.g. `ct=text/plain user=a:1,b:2`."""
    if p is None:
        return ""
    parts = []
    for attr, short in SHOWN:
        if not hasattr(p, attr):
            continue
        v = getattr(p, attr)
        if attr == "CorrelationData":
            v = v.hex()
        elif attr == "UserProperty":
            v = ",".join("%s:%s" % kv for kv in v)
        elif attr == "SubscriptionIdentifier":
            v = ",".join(str(i) for i in v)
        parts.append("%s=%s" % (short, v))
    return " ".join(parts)


def msg_text(m):
    line = "MSG %s q%d r%d %s" % (m.topic, m.qos, int(m.retain), m.payload.decode("utf-8", "replace"))
    p = props_text(m.properties)
    return line + (" | " + p if p else "")


def properties(packet_type, **values):
    """A paho Properties object for `packet_type` with these values set."""
    p = Properties(packet_type)
    for k, v in values.items():
        setattr(p, k, v)
    return p


def take(q, what):
    """The next item of queue `q`; fails after TIMEOUT saying `what` is missing."""
    try:
        return q.get(timeout=TIMEOUT)
    except queue.Empty:
        fail("no %s within %ss" % (what, TIMEOUT))


class V5(Client):
    """One paho client on its own network thread; MQTT 5 unless v311.
    Keyword arguments beyond the named ones are CONNECT properties."""

    def __init__(self, port, name, client_id=None, clean_start=True, v311=False, keepalive=60,
                 will=None, username=None, password=None, manual_ack=False, **connect_props):
        self.name = name
        self.proto = mqtt.MQTTv311 if v311 else mqtt.MQTTv5
        kwargs = {"clean_session": clean_start} if v311 else {}
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or name,
            protocol=self.proto,
            reconnect_on_failure=False,
            manual_ack=manual_ack,
            **kwargs,
        )
        self.connack = queue.Queue()
        self.subacks = queue.Queue()
        self.messages = queue.Queue()
        self.acks = {}
        self.acked = threading.Condition()
        self.disconnects = queue.Queue()
        self.c.on_connect = lambda c, u, flags, rc, props: self.connack.put((flags, rc, props))
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = self._on_message
        self.c.on_publish = self._on_publish
        self.c.on_disconnect = lambda c, u, flags, rc, props: self.disconnects.put(self.server_reason)
        # paho 2.1 reads the reason code of a DISCONNECT from the broker only
        # when properties follow it (eclipse-paho/paho.mqtt.python#860), and
        # reports `E0 01 8E` as a normal disconnection: take it from the packet.
        self.server_reason = None
        handle = self.c._handle_disconnect

        def handle_disconnect():
            packet = self.c._in_packet["packet"]
            self.server_reason = packet[0] if packet else 0
            return handle()

        self.c._handle_disconnect = handle_disconnect
        if username is not None:
            self.c.username_pw_set(username, password)
        if will is not None:
            topic, payload, qos, retain, will_props = will
            self.c.will_set(topic, payload, qos, retain, properties=will_props)
        if v311:
            self.c.connect("127.0.0.1", port, keepalive)
        else:
            props = properties(PacketTypes.CONNECT, **connect_props) if connect_props else None
            self.c.connect("127.0.0.1", port, keepalive, clean_start=clean_start, properties=props)
        self.c.loop_start()
        flags, rc, props = take(self.connack, "CONNACK for " + name)
        if rc.is_failure:
            fail("%s: connection refused: %s" % (name, rc))
        self.session_present = bool(flags.session_present)
        self.connack_props = props

    def _on_publish(self, client, userdata, mid, rc, props):
        with self.acked:
            self.acks[mid] = rc.value
            self.acked.notify_all()

    def subscribe(self, topic, qos=0, sub_id=None, **options):
        """Subscribes with these SubscribeOptions; returns the SUBACK's reason codes."""
        props = properties(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=sub_id) if sub_id else None
        if self.proto == mqtt.MQTTv5:
            rc, mid = self.c.subscribe(topic, options=SubscribeOptions(qos=qos, **options), properties=props)
        else:
            rc, mid = self.c.subscribe(topic, qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            fail("%s: subscribe failed: %s" % (self.name, rc))
        got_mid, codes = take(self.subacks, "SUBACK for " + self.name)
        if got_mid != mid:
            fail("%s: SUBACK for mid %s, expected %s" % (self.name, got_mid, mid))
        return codes

    def publish(self, topic, payload, qos=0, retain=False, **props):
        """Publishes with these PUBLISH properties. At QoS 1 and 2 waits for
        the acknowledgement and returns its reason code."""
        p = properties(PacketTypes.PUBLISH, **props) if props else None
        info = self.c.publish(topic, payload, qos, retain, properties=p)
        if qos == 0:
            info.wait_for_publish(timeout=TIMEOUT)
            return None
        with self.acked:
            if not self.acked.wait_for(lambda: info.mid in self.acks, timeout=TIMEOUT):
                fail("%s: no acknowledgement for %s within %ss" % (self.name, topic, TIMEOUT))
            return self.acks.pop(info.mid)

    def until(self, payload):
        """Returns the messages up to and including the one with `payload`."""
        got = []
        while not got or got[-1].payload != payload.encode():
            got += self.expect(1)
        return got

    def rest(self, quiet=QUIET):
        return Client.rest(self, quiet)

    def report(self, msgs):
        for m in msgs:
            out("%s %s" % (self.name, msg_text(m)))

    def wait_disconnect(self):
        """How the connection ended: `DISCONNECT RC` for a DISCONNECT from
        the broker with reason code RC, `CLOSED` for a close without one."""
        reason = take(self.disconnects, "end of the connection of " + self.name)
        return "CLOSED" if reason is None else "DISCONNECT %d" % reason

    def disconnect(self, reason=None):
        rc = ReasonCode(PacketTypes.DISCONNECT, identifier=reason) if reason is not None else None
        self.c.disconnect(reasoncode=rc)
        self.wait_disconnect()
        self.c.loop_stop()


def scenario_props(port):
    """Message properties forwarded unchanged, with the subscription id."""
    sub = V5(port, "sub")
    out("sub SUBACK %s" % sub.subscribe("p5/#", 1, sub_id=7))
    pub = V5(port, "pub")
    pub.publish(
        "p5/full", "with properties", 1,
        PayloadFormatIndicator=1,
        ContentType="text/plain; charset=utf-8",
        ResponseTopic="p5/reply/42",
        CorrelationData=b"\x00\x01corr\xff",
        UserProperty=[("a", "1"), ("b", "2"), ("a", "3"), ("empty", "")],
    )
    pub.publish("p5/bare", "no properties", 0)
    sub.report(sub.expect(2))


def scenario_overlap(port):
    """Overlapping subscriptions, two with a subscription identifier."""
    s = V5(port, "s")
    s.subscribe("ov/#", 1, sub_id=1)
    s.subscribe("ov/+", 0, sub_id=2)
    s.subscribe("ov/x", 2)
    p = V5(port, "p")
    p.publish("ov/x", "x", 1)
    p.publish("ov/y", "y", 1)
    # Matches ov/# only: the end of what came for the others.
    p.publish("ov/a/b", "end", 1)
    s.report(s.until("end"))
    p.publish("ov/r", "kept", 1, retain=True)
    t = V5(port, "t")
    t.subscribe("ov/r", 1, sub_id=9)
    t.report(t.expect(1))
    p.publish("ov/r", "", 1, retain=True)


def scenario_mixed(port):
    """3.1.1 and 5.0 clients side by side."""
    sub3 = V5(port, "sub3", v311=True)
    sub3.subscribe("mx/#", 1)
    sub5 = V5(port, "sub5")
    sub5.subscribe("mx/#", 1)
    pub5 = V5(port, "pub5")
    pub5.publish("mx/from5", "hello from 5", 1,
                 ContentType="text/plain", UserProperty=[("k", "v")])
    pub3 = V5(port, "pub3", v311=True)
    pub3.publish("mx/from3", "hello from 3.1.1", 1)
    sub3.report(sub3.expect(2))
    sub5.report(sub5.expect(2))


def scenario_no_local(port):
    a = V5(port, "a")
    a.subscribe("nl/#", 1, noLocal=True)
    b = V5(port, "b")
    b.subscribe("nl/#", 1)
    # Each PUBACK comes after the message was routed: a's own message
    # would reach a before b's.
    a.publish("nl/a", "from a", 1)
    b.publish("nl/b", "from b", 1)
    a.report(a.until("from b"))
    b.report(b.until("from b"))


def scenario_retain_as_published(port):
    keep = V5(port, "keep")
    keep.subscribe("rap/#", 1, retainAsPublished=True)
    plain = V5(port, "plain")
    plain.subscribe("rap/#", 1)
    pub = V5(port, "pub")
    pub.publish("rap/x", "retained", 1, retain=True)
    pub.publish("rap/y", "not retained", 1)
    keep.report(keep.expect(2))
    plain.report(plain.expect(2))
    pub.publish("rap/x", "", 1, retain=True)


def scenario_retain_handling(port):
    """Each subscription is followed by a live marker: what came before it
    is what the subscription sent."""
    pub = V5(port, "pub")
    pub.publish("rh/x", "kept", 1, retain=True)
    marker = 0
    for rh in (0, 1, 2):
        c = V5(port, "rh%d" % rh)
        for attempt in ("new", "again"):
            c.subscribe("rh/#", 1, retainHandling=rh)
            marker += 1
            pub.publish("rh/marker", "marker %d" % marker, 1)
            for m in c.until("marker %d" % marker):
                out("%s %s %s" % (c.name, attempt, msg_text(m)))
    pub.publish("rh/x", "", 1, retain=True)


def scenario_shared(port):
    m1 = V5(port, "m1")
    m1.subscribe("$share/g/sh/t", 1)
    m2 = V5(port, "m2")
    m2.subscribe("$share/g/sh/t", 1)
    n = V5(port, "n")
    n.subscribe("sh/t", 1)
    pub = V5(port, "pub")
    for i in range(10):
        pub.publish("sh/t", str(i), 1)
    n.report(n.expect(10))
    got = []
    deadline = time.monotonic() + TIMEOUT
    while len(got) < 10 and time.monotonic() < deadline:
        for m in (m1, m2):
            try:
                got.append((m, m.messages.get(timeout=0.05)))
            except queue.Empty:
                pass
    got += [(m, x) for m in (m1, m2) for x in m.rest()]
    for m, x in got:
        m.report([x])
    out("LEAVE")
    m1.disconnect()
    # Connecting again with m1's client id (clean start, no subscription)
    # is answered only once the broker has ended the old connection and
    # with it the group membership.
    V5(port, "again", client_id="m1")
    for i in range(10, 15):
        pub.publish("sh/t", str(i), 1)
    m2.report(m2.expect(5))
    m2.report(m2.rest())


def scenario_shared_retained(port):
    pub = V5(port, "pub")
    pub.publish("shr/t", "kept", 1, retain=True)
    g = V5(port, "g")
    g.subscribe("$share/g/shr/t", 1)
    # A live message after the SUBACK: what came before it was retained.
    pub.publish("shr/t", "live", 1)
    g.report(g.until("live"))
    pub.publish("shr/t", "", 1, retain=True)


def scenario_alias(port):
    sub = V5(port, "sub")
    sub.subscribe("ta/#", 1)
    pub = V5(port, "pub")
    out("pub TopicAliasMaximum %s" % getattr(pub.connack_props, "TopicAliasMaximum", None))
    pub.publish("ta/one", "1 sets alias 1", 1, TopicAlias=1)
    pub.publish("", "2 uses alias 1", 1, TopicAlias=1)
    pub.publish("ta/two", "3 sets alias 10", 1, TopicAlias=10)
    pub.publish("", "4 uses alias 10", 0, TopicAlias=10)
    pub.publish("ta/three", "5 moves alias 1", 1, TopicAlias=1)
    pub.publish("", "6 uses alias 1", 1, TopicAlias=1)
    sub.report(sub.expect(6))
    pub.c.publish("ta/four", "7 alias 11", 0, properties=properties(PacketTypes.PUBLISH, TopicAlias=11))
    out("pub %s" % pub.wait_disconnect())
    sub.report(sub.rest())


def scenario_expiry(port):
    sub = V5(port, "sub", client_id="exp-sub", SessionExpiryInterval=60)
    sub.subscribe("ex/#", 1)
    sub.disconnect()
    pub = V5(port, "pub")
    pub.publish("ex/short", "expires in 1 s", 1, MessageExpiryInterval=1)
    pub.publish("ex/long", "expires in 60 s", 1, MessageExpiryInterval=60)
    pub.publish("ex/none", "never expires", 1)
    time.sleep(2.5)
    sub = V5(port, "sub", client_id="exp-sub", clean_start=False, SessionExpiryInterval=60)
    out("sub session present %s" % sub.session_present)
    sub.report(sub.until("never expires"))


def scenario_session(port):
    short = V5(port, "short", SessionExpiryInterval=1)
    short.subscribe("se/#", 1)
    short.disconnect()
    long = V5(port, "long", SessionExpiryInterval=60)
    long.subscribe("se/#", 1)
    long.disconnect()
    pub = V5(port, "pub")
    pub.publish("se/x", "while away", 1)
    time.sleep(2.5)
    for name in ("short", "long"):
        c = V5(port, name, clean_start=False, SessionExpiryInterval=60)
        out("%s session present %s" % (name, c.session_present))
        c.report(c.rest())


def scenario_will_client(port, client_id, delay, expiry, mode):
    """A client whose will has a delay; `hang` waits to be killed,
    `will-disconnect` sends DISCONNECT with reason 0x04."""
    will_props = properties(PacketTypes.WILLMESSAGE, WillDelayInterval=int(delay),
                            UserProperty=[("will", client_id)])
    c = V5(port, client_id, will=("wd/%s" % client_id, "will of %s" % client_id, 1, False, will_props),
           SessionExpiryInterval=int(expiry))
    out("CONNECTED")
    if mode == "hang":
        time.sleep(600)
    elif mode == "will-disconnect":
        c.disconnect(reason=0x04)
        out("DISCONNECTED")
    else:
        fail("unknown mode %r" % mode)


def scenario_puback(port, user, password):
    pub = V5(port, "pub", username=user, password=password)
    out("no subscriber %d" % pub.publish("pa/none", "nobody listens", 1))
    sub = V5(port, "sub", username=user, password=password)
    sub.subscribe("pa/sub", 1)
    out("one subscriber %d" % pub.publish("pa/sub", "somebody listens", 1))
    out("denied %d" % pub.publish("denied/x", "not allowed", 1))
    sub.report(sub.expect(1))


def scenario_receive_maximum(port):
    """Receive maximum 1: the broker sends the next QoS 1 message only after
    the previous one's PUBACK."""
    sub = V5(port, "sub", manual_ack=True, ReceiveMaximum=1)
    sub.subscribe("rm/#", 1)
    pub = V5(port, "pub")
    for i in range(1, 6):
        pub.publish("rm/%d" % i, "message %d" % i, 1)
    for i in range(1, 6):
        m = sub.expect(1)
        sub.report(m)
        if i <= 2:
            sub.report(sub.rest())
        out("ACK %d" % i)
        sub.c.ack(m[0].mid, 1)
    sub.report(sub.rest())


def scenario_packet_size(port):
    sub = V5(port, "sub", MaximumPacketSize=100)
    sub.subscribe("mp/#", 1)
    pub = V5(port, "pub")
    pub.publish("mp/big", "x" * 500, 1)
    pub.publish("mp/small", "small", 1)
    sub.report(sub.until("small"))


def scenario_takeover(port):
    first = V5(port, "first", client_id="same-id")
    second = V5(port, "second", client_id="same-id")
    out("first %s" % first.wait_disconnect())
    out("second session present %s" % second.session_present)


SCENARIOS = {
    "props": scenario_props,
    "overlap": scenario_overlap,
    "mixed": scenario_mixed,
    "no-local": scenario_no_local,
    "retain-as-published": scenario_retain_as_published,
    "retain-handling": scenario_retain_handling,
    "shared": scenario_shared,
    "shared-retained": scenario_shared_retained,
    "alias": scenario_alias,
    "expiry": scenario_expiry,
    "session": scenario_session,
    "will-client": scenario_will_client,
    "puback": scenario_puback,
    "receive-maximum": scenario_receive_maximum,
    "packet-size": scenario_packet_size,
    "takeover": scenario_takeover,
}

if __name__ == "__main__":
    name, port, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    if name not in SCENARIOS:
        fail("unknown scenario %r" % name)
    SCENARIOS[name](port, *args)
    out("DONE")
    # Remaining clients are dropped with the process.
    sys.stdout.flush()
