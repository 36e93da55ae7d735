"""A /ws client that reads frames until it is killed (scripts/bench/observed.sh)."""
import base64
import os
import socket
import sys
import time

port = int(sys.argv[1])
for _ in range(50):
    try:
        s = socket.create_connection(('127.0.0.1', port))
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit('ws_reader: cannot connect to port %d' % port)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(('GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
           'Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n' % key).encode())
while s.recv(65536):
    pass
