"""Images: commits of running servers into a registry, the image library, and starting from it."""
