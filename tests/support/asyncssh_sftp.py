"""An SFTP server that is not OpenSSH, for tests: asyncssh's own SFTP server on 127.0.0.1.

usage: asyncssh_sftp.py HOST_KEY AUTHORIZED_KEYS ROOT PORT_FILE [PORT]
Writes the port it listens on to PORT_FILE once it accepts connections; serves ROOT as the
tenant home (chroot), public-key authentication only. Stops when killed.
"""
import asyncio
import os
import sys

import asyncssh


async def main() -> None:
    host_key, authorized, root, port_file = sys.argv[1:5]
    port = int(sys.argv[5]) if len(sys.argv) > 5 else 0

    def sftp_factory(chan):
        return asyncssh.SFTPServer(chan, chroot=root.encode())

    server = await asyncssh.listen(
        "127.0.0.1",
        port,
        server_host_keys=[host_key],
        authorized_client_keys=authorized,
        sftp_factory=sftp_factory,
        allow_scp=False,
        reuse_address=True,
    )
    bound = server.sockets[0].getsockname()[1]
    with open(port_file + ".tmp", "w") as f:
        f.write(str(bound))
    os.rename(port_file + ".tmp", port_file)
    await asyncio.Event().wait()


asyncio.run(main())
