"""Small blocking wrapper around paho-mqtt 2.1 for the integration tests.

Each script prints what it saw, one line per event, and the Rust test
compares those lines; a script exits non-zero (with a message on stderr)
when something it waited for did not come.
"""

import queue
import sys
import threading
import time

import paho.mqtt.client as mqtt

TIMEOUT = 20.0

PROTOCOLS = {"311": mqtt.MQTTv311, "31": mqtt.MQTTv31}


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


def protocol(name):
    try:
        return PROTOCOLS[name]
    except KeyError:
        fail("unknown protocol %r (use 311 or 31)" % name)


def out(line):
    print(line, flush=True)


def msg_line(m):
    return "MSG %s q%d r%d %s" % (m.topic, m.qos, int(m.retain), m.payload.decode("utf-8", "replace"))


class Client:
    """One paho client on its own network thread (loop_start)."""

    def __init__(self, port, client_id, proto, clean_session=True, will=None, keepalive=60, unix_path=None):
        """Connects to 127.0.0.1:port, or with unix_path to that Unix socket."""
        self.name = client_id
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=proto,
            transport="tcp" if unix_path is None else "unix",
            reconnect_on_failure=False,
        )
        self.connack = queue.Queue()
        self.subacks = queue.Queue()
        self.messages = queue.Queue()
        self.disconnected = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = self._on_message
        self.c.on_disconnect = self._on_disconnect
        if will is not None:
            topic, payload, qos, retain = will
            self.c.will_set(topic, payload, qos, retain)
        if unix_path is None:
            self.c.connect("127.0.0.1", port, keepalive)
        else:
            # paho's unix transport takes the socket's path as the host.
            self.c.connect(unix_path, keepalive=keepalive)
        self.c.loop_start()
        try:
            flags, rc = self.connack.get(timeout=TIMEOUT)
        except queue.Empty:
            fail("%s: no CONNACK within %ss" % (client_id, TIMEOUT))
        if rc.is_failure:
            fail("%s: connection refused: %s" % (client_id, rc))
        self.session_present = bool(flags.session_present)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack.put((flags, reason_code))

    def _on_subscribe(self, client, userdata, mid, reason_code_list, properties):
        self.subacks.put((mid, [rc.value for rc in reason_code_list]))

    def _on_message(self, client, userdata, msg):
        self.messages.put(msg)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnected.set()

    def subscribe(self, topic, qos):
        """Subscribes and returns the granted QoS list of the SUBACK."""
        rc, mid = self.c.subscribe(topic, qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            fail("%s: subscribe failed: %s" % (self.name, rc))
        try:
            got_mid, granted = self.subacks.get(timeout=TIMEOUT)
        except queue.Empty:
            fail("%s: no SUBACK within %ss" % (self.name, TIMEOUT))
        if got_mid != mid:
            fail("%s: SUBACK for mid %s, expected %s" % (self.name, got_mid, mid))
        return granted

    def publish(self, topic, payload, qos=0, retain=False):
        info = self.c.publish(topic, payload, qos, retain)
        info.wait_for_publish(timeout=TIMEOUT)
        if not info.is_published():
            fail("%s: publish to %s not completed within %ss" % (self.name, topic, TIMEOUT))

    def expect(self, n, timeout=TIMEOUT):
        """Waits for n messages and returns them in arrival order."""
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                fail("%s: got %d of %d messages: %s" % (self.name, len(got), n, [msg_line(m) for m in got]))
            try:
                got.append(self.messages.get(timeout=left))
            except queue.Empty:
                pass
        return got

    def expect_none(self, dur=1.0):
        """Fails if a message arrives within dur seconds."""
        try:
            m = self.messages.get(timeout=dur)
        except queue.Empty:
            return
        fail("%s: unexpected message %s" % (self.name, msg_line(m)))

    def rest(self, quiet=1.0):
        """The messages that arrive until none has for `quiet` seconds."""
        got = []
        while True:
            try:
                got.append(self.messages.get(timeout=quiet))
            except queue.Empty:
                return got

    def disconnect(self):
        self.c.disconnect()
        self.disconnected.wait(TIMEOUT)
        self.c.loop_stop()


class Events:
    """A paho client's CONNACK, SUBACK and messages in arrival order, one
    queue: wait(kind) returns the next of that kind (reason code, granted
    QoS list, message)."""

    def __init__(self, c):
        self.q = queue.Queue()
        c.on_connect = lambda cl, ud, fl, rc, pr: self.q.put(("CONNACK", rc))
        c.on_subscribe = lambda cl, ud, mid, rcs, pr: self.q.put(("SUBACK", [r.value for r in rcs]))
        c.on_message = lambda cl, ud, m: self.q.put(("MSG", m))

    def wait(self, kind):
        try:
            while True:
                k, v = self.q.get(timeout=TIMEOUT)
                if k == kind:
                    return v
        except queue.Empty:
            fail("no %s" % kind)
