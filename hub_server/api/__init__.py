"""The HTTP faces of the catalogue: the REST API, downloads, the legacy index and /hf/."""
