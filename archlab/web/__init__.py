"""`archlab serve`: the lab's web page and JSON API (FastAPI, jinja2 templates, no CDN)."""
