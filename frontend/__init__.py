"""The Explore UI: server-rendered pages over the catalogue, with small progressive JavaScript."""
