"""A vCenter simulator serving guest files from plain directories. Imports neither fs nor vsphere."""
