"""An independent receiving end of Meridian's AMQP binding (PROTOCOL.md
section 10), written with Qpid Proton, for transport/amqp's tests.

It reads the Hello a Meridian dialer sends on the data address, answers a
hand-encoded Welcome on the control address with the same session id, then
reads the dialer's next message and prints one JSON line describing both.

    proton_receiver.py URL DATA_ADDRESS CONTROL_ADDRESS
"""
import json
import sys

from proton import Message
from proton.utils import BlockingConnection

SESSION = "meridian-session"


def uvarint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def varint(n):
    return uvarint((n << 1) ^ (n >> 63) if n < 0 else n << 1)


def string(s):
    b = s.encode()
    return uvarint(len(b)) + b


def frame(t, body):
    return bytes([t]) + uvarint(len(body)) + body


def describe(msg):
    body = msg.body
    return {
        "session": (msg.properties or {}).get(SESSION),
        "subject": msg.subject,
        "data_section": isinstance(body, (bytes, bytearray)),
        "type": body[0] if body else None,
        "size": len(body) if body else 0,
    }


def main():
    url, data, control = sys.argv[1:4]
    conn = BlockingConnection(url, timeout=30, sasl_enabled=True, allowed_mechs="PLAIN")
    rcv = conn.create_receiver(data, credit=10)
    snd = conn.create_sender(control)
    hello = rcv.receive(timeout=30)
    rcv.accept()
    h = describe(hello)
    # Welcome: version 3, gateway "hq-a", region "hq", window 1 MiB,
    # max batch 1 MiB (PROTOCOL.md section 4.2).
    welcome = frame(0x02, uvarint(3) + string("hq-a") + string("hq") + varint(1 << 20) + varint(1 << 20))
    snd.send(Message(body=welcome, inferred=True, subject="welcome", properties={SESSION: h["session"]}))
    nxt = rcv.receive(timeout=30)
    rcv.accept()
    print(json.dumps({"hello": h, "next": describe(nxt)}))
    conn.close()


if __name__ == "__main__":
    main()
