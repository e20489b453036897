"""The middle process of privilege.spawn_detached_as_user: see __main__.py."""
