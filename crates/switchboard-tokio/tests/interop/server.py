"""Python `websockets` as an echo server for the Switchboard client.

Prints "PORT <n>" once listening on 127.0.0.1; runs until stdin is closed.
"""
import sys
import threading

from websockets.sync.server import serve


def echo(ws):
    for message in ws:
        ws.send(message)


def main() -> None:
    with serve(echo, "127.0.0.1", 0, max_size=8 << 20) as server:
        port = server.socket.getsockname()[1]
        print(f"PORT {port}", flush=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        sys.stdin.read()  # until the test closes our stdin
        server.shutdown()


if __name__ == "__main__":
    main()
