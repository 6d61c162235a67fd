"""guestfs-mount: the files inside vSphere VMs as a local FUSE filesystem."""

__version__ = "0.1.0"
