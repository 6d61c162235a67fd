"""The smallest pyfuse3 filesystem: one file, /hello. Proves that FUSE works on this machine.

Run as `python -m tests.helpers.hellofs MOUNTPOINT`; unmounting ends it, and so does SIGTERM.
"""

import errno
import signal
import stat
import sys

import pyfuse3
import trio

HELLO_INODE = pyfuse3.ROOT_INODE + 1
HELLO_NAME = b"hello"
HELLO_DATA = b"hello from pyfuse3\n"


class HelloFS(pyfuse3.Operations):
    async def getattr(self, inode, ctx=None):
        attrs = pyfuse3.EntryAttributes()
        if inode == pyfuse3.ROOT_INODE:
            attrs.st_mode = stat.S_IFDIR | 0o755
            attrs.st_nlink = 2
        elif inode == HELLO_INODE:
            attrs.st_mode = stat.S_IFREG | 0o444
            attrs.st_size = len(HELLO_DATA)
            attrs.st_nlink = 1
        else:
            raise pyfuse3.FUSEError(errno.ENOENT)
        attrs.st_ino = inode
        return attrs

    async def lookup(self, parent_inode, name, ctx=None):
        if parent_inode == pyfuse3.ROOT_INODE and name == HELLO_NAME:
            return await self.getattr(HELLO_INODE)
        raise pyfuse3.FUSEError(errno.ENOENT)

    async def opendir(self, inode, ctx):
        if inode != pyfuse3.ROOT_INODE:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh, start_id, token):
        if start_id == 0:
            pyfuse3.readdir_reply(token, HELLO_NAME, await self.getattr(HELLO_INODE), 1)

    async def open(self, inode, flags, ctx):
        if inode != HELLO_INODE:
            raise pyfuse3.FUSEError(errno.EISDIR)
        return pyfuse3.FileInfo(fh=inode)

    async def read(self, fh, off, size):
        return HELLO_DATA[off : off + size]


async def _main():
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_terminate_on_signal)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


async def _terminate_on_signal():
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            pyfuse3.terminate()
            return


def main(mountpoint: str) -> None:
    options = set(pyfuse3.default_options)
    options.add("fsname=hellofs")
    pyfuse3.init(HelloFS(), mountpoint, options)
    try:
        trio.run(_main)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main(sys.argv[1])
