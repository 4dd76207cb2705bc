"""Gives the 2.0 suite's CONNACK helper Mosquitto 2.1's default Maximum
Packet Size, as the 2.1 suite's helper has it.

Mosquitto 2.1 defaults max_packet_size to 2,000,000 bytes and says so in
every successful MQTT 5 CONNACK (Maximum Packet Size, between the other
properties and Receive Maximum); midge takes that default. The 2.0 suite
expects 2.0's CONNACK without it. This wraps mosq_test.gen_connack so that
a successful MQTT 5 CONNACK carries Maximum Packet Size 2000000 too,
where 2.1 puts it (before Receive Maximum), unless the test already names
a maximum packet size of its own: with the property helper, and in the
CONNACKs that tests build themselves with a Receive Maximum. A test that
cuts the random assigned client id off the end of the expected CONNACK
(`connack_packet[:-39]`) cuts the 5 bytes more that the 2.1 suite cuts
(`[:-44]`). Stops with an error when the helper is not found,
so a changed suite cannot pass unpatched.
"""
import pathlib
import sys

path = sys.argv[1]
for test in sorted(pathlib.Path(path).parent.glob("broker/*.py")):
    source = test.read_text()
    if "connack_packet = connack_packet[:-39]" in source:
        test.write_text(source.replace(
            "connack_packet = connack_packet[:-39]", "connack_packet = connack_packet[:-44]"))
with open(path) as f:
    text = f.read()
if "def gen_connack(" not in text or "_gen_connack_2_0" in text:
    sys.exit(f"{path}: no gen_connack to wrap, or wrapped already")
text = text.replace("def gen_connack(", "def _gen_connack_2_0(", 1)
text += '''

def _ids(properties):
    """The ids and offsets of a CONNACK's properties, in order; None when
    the list holds a property this reader does not know."""
    sizes = {0x01: 1, 0x11: 4, 0x13: 2, 0x21: 2, 0x22: 2, 0x24: 1, 0x25: 1,
             0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1}
    found = []
    i = 0
    while i < len(properties):
        pid = properties[i]
        found.append((pid, i))
        if pid in sizes:
            i += 1 + sizes[pid]
        elif pid in (0x12, 0x1A, 0x1C, 0x1F) and i + 3 <= len(properties):
            i += 3 + int.from_bytes(properties[i + 1:i + 3], "big")
        else:
            return None
    return found

def gen_connack(flags=0, rc=0, proto_ver=4, properties=b"", property_helper=True):
    # Mosquitto 2.1's default max_packet_size, as the 2.1 suite expects it.
    if proto_ver == 5 and rc == 0 and properties is not None:
        ids = _ids(properties)
        if ids is not None and all(pid != 0x27 for pid, _ in ids):
            maximum = mqtt5_props.gen_uint32_prop(mqtt5_props.PROP_MAXIMUM_PACKET_SIZE, 2000000)
            if property_helper:
                # The helper appends Receive Maximum after these.
                properties = properties + maximum
            else:
                at = next((o for pid, o in ids if pid == 0x21), None)
                if at is not None:
                    properties = properties[:at] + maximum + properties[at:]
    return _gen_connack_2_0(flags, rc, proto_ver, properties, property_helper)
'''
with open(path, "w") as f:
    f.write(text)
