"""`guestfs-mount check`: the whole path from this machine to the files in a VM, walked without mounting, one step
at a time (report.py), with what to do about each failure (advice.py): vCenter (vcenter.py), then each VM's
guest path (guest.py), in the order walk.py gives."""
