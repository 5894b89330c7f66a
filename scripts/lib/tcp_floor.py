"""What plain TCP gets across the emulated WAN: the practical floor next to bytes / bandwidth.

    DELAY_MS=75 ../shared/tools/wan/wan-up.sh
    ip netns exec wanB python3 scripts/lib/tcp_floor.py server 4 &
    ip netns exec wanA python3 scripts/lib/tcp_floor.py client 4 400   # 4 streams, 400 MB in all
    ../shared/tools/wan/wan-down.sh
"""
import socket
import sys
import threading
import time

HOST, PORT = "10.200.0.2", 5999


def serve(streams):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, PORT))
    listener.listen(16)

    def drain(conn):
        while conn.recv(1 << 20):
            pass
        conn.close()

    for _ in range(streams):
        conn, _ = listener.accept()
        threading.Thread(target=drain, args=(conn,)).start()


def send(streams, megabytes):
    chunk = b"x" * (1 << 20)

    def one():
        conn = socket.create_connection((HOST, PORT))
        for _ in range(megabytes // streams):
            conn.sendall(chunk)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)
        conn.close()

    start = time.time()
    threads = [threading.Thread(target=one) for _ in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.time() - start
    print(f"{streams} stream(s), {megabytes} MB: {took:.1f} s = {megabytes / took:.1f} MB/s ({megabytes * 8 / took:.0f} Mbit/s)")


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    else:
        send(int(sys.argv[2]), int(sys.argv[3]))
