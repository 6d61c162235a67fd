"""The inode table: the single truth of which inode is which mount path.

A mount path is the path below the mount point as a str without a leading slash: "" is the root, "vm1" a VM's
directory, "vm1/etc/hosts" a file in it. An inode lives while the kernel holds lookups on it (every `lookup`
reply and every accepted `readdir_reply` entry adds one; `forget` takes them away) or while a handle is open on
it. A rename moves the whole subtree to the new paths under the same inode numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyfuse3


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def split(path: str) -> tuple[str, str]:
    """(parent path, name)."""
    parent, _, name = path.rpartition("/")
    return parent, name


def is_under(path: str, ancestor: str) -> bool:
    """True for `ancestor` itself and anything below it."""
    return ancestor == "" or path == ancestor or path.startswith(ancestor + "/")


class UnknownReference(KeyError):
    """An inode number or file handle the kernel sent that the tables no longer hold: ENOENT to the kernel. Only
    this is; any other KeyError in a handler is a bug and is logged as one (a KeyError of the listing shortcut's
    bookkeeping, read as "unknown inode", was a published file's ENOENT under load)."""


@dataclass
class Node:
    inode: int
    path: str
    lookups: int = 0
    opens: int = 0
    unlinked: bool = False  # removed (or replaced by a rename) while the kernel still held it


class InodeTable:
    def __init__(self) -> None:
        self._by_inode: dict[int, Node] = {}
        self._by_path: dict[str, Node] = {}
        self._next = pyfuse3.ROOT_INODE + 1
        root = Node(pyfuse3.ROOT_INODE, "", lookups=1)
        self._by_inode[root.inode] = root
        self._by_path[""] = root

    def __len__(self) -> int:
        return len(self._by_inode)

    def node(self, inode: int) -> Node:
        """UnknownReference for an inode the kernel should no longer know."""
        node = self._by_inode.get(inode)
        if node is None:
            raise UnknownReference(f"inode {inode}")
        return node

    def path(self, inode: int) -> str:
        return self.node(inode).path

    def find_inode(self, inode: int) -> Node | None:
        return self._by_inode.get(inode)

    def find(self, path: str) -> Node | None:
        return self._by_path.get(path)

    def nodes(self) -> list[Node]:
        """Every inode with a path now (not those unlinked while the kernel still holds them)."""
        return list(self._by_path.values())

    def inode_for(self, path: str) -> int:
        """The inode of `path`, assigning a new one (with no lookups yet) when the path is not known."""
        node = self._by_path.get(path)
        if node is None:
            node = Node(self._next, path)
            self._next += 1
            self._by_inode[node.inode] = node
            self._by_path[path] = node
        return node.inode

    def add_lookup(self, inode: int, n: int = 1) -> None:
        self.node(inode).lookups += n

    def forget(self, inode: int, n: int) -> None:
        node = self._by_inode.get(inode)
        if node is None or inode == pyfuse3.ROOT_INODE:
            return
        node.lookups = max(0, node.lookups - n)
        self._drop_if_unused(node)

    def drop_unreferenced(self, inode: int) -> None:
        """Forget an inode assigned by `inode_for` that was never handed to the kernel."""
        node = self._by_inode.get(inode)
        if node is not None:
            self._drop_if_unused(node)

    def opened(self, inode: int) -> None:
        self.node(inode).opens += 1

    def closed(self, inode: int) -> None:
        node = self._by_inode.get(inode)
        if node is not None:
            node.opens = max(0, node.opens - 1)
            self._drop_if_unused(node)

    def _drop_if_unused(self, node: Node) -> None:
        if node.lookups == 0 and node.opens == 0 and node.inode != pyfuse3.ROOT_INODE:
            del self._by_inode[node.inode]
            if self._by_path.get(node.path) is node:
                del self._by_path[node.path]

    def unlink(self, path: str) -> Node | None:
        """The path is gone; its inode lives on (unlinked) until forgotten and closed."""
        node = self._by_path.pop(path, None)
        if node is not None:
            node.unlinked = True
        return node

    def unlink_tree(self, path: str) -> None:
        for p in [p for p in self._by_path if is_under(p, path) and p != ""]:
            self.unlink(p)

    def rename(self, old: str, new: str) -> None:
        """Move `old` and everything below it to `new`; whatever was at `new` becomes unlinked."""
        self.unlink_tree(new)
        moving = [n for p, n in self._by_path.items() if is_under(p, old)]
        for node in moving:
            del self._by_path[node.path]
        for node in moving:
            node.path = new + node.path[len(old):]
            self._by_path[node.path] = node
