"""A real SMTP server for the tests (aiosmtpd): stores each message it
accepts as OUT_DIR/NNNN.eml and prints its port. When OUT_DIR/reject-next
exists, the next message is refused with a transient 451 (and the file is
removed), so retries can be tested; the refused message is kept as
OUT_DIR/refused.txt.

usage: smtp_sink.py OUT_DIR
"""

import os
import socket
import sys
import time

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, out):
        self.out = out
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        flag = os.path.join(self.out, "reject-next")
        if os.path.exists(flag):
            os.remove(flag)
            with open(os.path.join(self.out, "refused.txt"), "wb") as f:
                f.write(envelope.original_content or envelope.content)
            return "451 4.3.0 try again later"
        self.n += 1
        path = os.path.join(self.out, f"{self.n:04d}.eml")
        with open(path + ".tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(path + ".tmp", path)
        return "250 OK"


def main():
    out = sys.argv[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(Sink(out), hostname="127.0.0.1", port=port)
    controller.start()
    print(port, flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
