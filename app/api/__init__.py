"""HTTP surface: thin FastAPI routers and their dependencies."""
