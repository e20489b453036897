"""nbinit: the startup agent for JupyterHub notebook images."""

__version__ = "0.1.0"
