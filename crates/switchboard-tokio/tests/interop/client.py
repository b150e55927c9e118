"""Python `websockets` as a client against a Switchboard echo server.

Usage: client.py ws://HOST:PORT/echo
Exits 0 when every check passed; prints what failed otherwise.
"""
import sys

from websockets.sync.client import connect


def main(url: str, expect_deflate: bool) -> None:
    # websockets offers permessage-deflate by default; a server without it must decline.
    with connect(url, max_size=8 << 20) as ws:
        names = [e.name for e in ws.protocol.extensions]
        if expect_deflate:
            assert names == ["permessage-deflate"], f"deflate negotiated, got {names}"
        else:
            assert names == [], f"nothing negotiated, got {names}"
        # Compressible text, well above any compression threshold.
        chat = '{"type":"message","text":"' + "hello world " * 200 + '"}'
        ws.send(chat)
        assert ws.recv() == chat, "compressible text echo"
        ws.send("héllo from python")
        assert ws.recv() == "héllo from python", "text echo"
        ws.send(b"\x00\x01\xff")
        assert ws.recv() == b"\x00\x01\xff", "binary echo"
        big = bytes(range(256)) * 4096  # 1 MiB
        ws.send(big)
        assert ws.recv() == big, "1 MiB echo"
        # A fragmented text message: websockets sends an iterable as fragments.
        ws.send(["frag", "men", "ted ✓"])
        assert ws.recv() == "fragmented ✓", "fragmented echo"
        pong = ws.ping(b"ping-payload")
        assert pong.wait(5), "pong for our ping"
        ws.close(code=4001, reason="python done")
        assert ws.close_code == 4001, f"echoed close code, got {ws.close_code}"
    print("python client: all checks passed")


if __name__ == "__main__":
    main(sys.argv[1], "--expect-deflate" in sys.argv[2:])
