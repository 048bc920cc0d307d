"""Publishing adapters on this hub: uploads, their validation, and the archives the hub hosts."""
