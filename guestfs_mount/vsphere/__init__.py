"""The vSphere client: guest file operations over VI/JSON or Automation REST. Knows nothing of FUSE."""
