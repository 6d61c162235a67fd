"""Benchmarks of guestfs-mount against the physical limit: the mount and raw HTTP transfers side by side, in one
run, on the simulator (`python -m benchmarks --help`; docs/performance.md)."""
