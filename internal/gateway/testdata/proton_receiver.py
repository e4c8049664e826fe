"""An independent AMQP 1.0 consumer, written with Qpid Proton, for the AMQP
sink tests: it receives from an address until nothing has come for IDLE
seconds, accepting each message, and prints one JSON line per message
(message-id, subject, content type, application properties, body).

    proton_receiver.py URL ADDRESS IDLE
"""
import json
import sys

from proton import Timeout
from proton.utils import BlockingConnection


def main():
    url, address, idle = sys.argv[1], sys.argv[2], float(sys.argv[3])
    conn = BlockingConnection(url, timeout=60, sasl_enabled=True, allowed_mechs="PLAIN")
    try:
        rcv = conn.create_receiver(address, credit=256)
        while True:
            try:
                m = rcv.receive(timeout=idle)
            except Timeout:
                break
            body = m.body
            if isinstance(body, (bytes, bytearray, memoryview)):
                body = bytes(body).decode("utf-8", "replace")
            props = {}
            for k, v in (m.properties or {}).items():
                props[str(k)] = v if isinstance(v, (str, int, float, bool)) else str(v)
            print(json.dumps({"id": str(m.id), "subject": m.subject, "content_type": m.content_type,
                              "properties": props, "body": body}))
            rcv.accept()
    finally:
        conn.close()


if __name__ == "__main__":
    main()
