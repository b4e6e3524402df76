"""The aiohttp front end (a subpackage: never run a file from here by path, see DESIGN)."""
