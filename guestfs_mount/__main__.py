import sys

from guestfs_mount.cli import main

sys.exit(main())
