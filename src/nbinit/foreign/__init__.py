"""The bootstrap that runs a module of nbinit on another Python: see __main__.py."""
