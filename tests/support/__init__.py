"""Real components the test suite starts itself: a package index, uv projects, image tools."""
