"""The FUSE side: pyfuse3 operations over the vSphere client. Knows nothing of HTTP."""
