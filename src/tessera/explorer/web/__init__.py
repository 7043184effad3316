"""`tessera explorer serve`: a read-only web explorer over the indexed database.

A FastAPI app with a JSON API (described by `/openapi.json`) and server-rendered HTML pages.
Every figure comes from `figures.compute_figures` over the database's stored events (through
`indexer.database_figures`, the same path as `tessera stats` and the audit), and carries the tx
hashes that make it up; every figure on a page links to the list of its transactions, and every
transaction to `/tx/{hash}`, which lists that transaction's events from the database (a devnet has
no external block explorer). Hardware, endpoints and per-lease rows come from the derived tables.

Pages are plain HTML with inline CSS and inline SVG charts drawn here: no CDN, no JavaScript. Every
value is HTML-escaped (on-chain strings such as GPU models and endpoints are attacker-chosen), and
the HTML responses carry a Content-Security-Policy that allows no script at all.
Definitions: docs/explorer.md.

Modules, bottom up: `models` (the API models), `queries` (database reads, figures cached per
cursor), `outputs` (figures and rows shaped into the models), `markup` and `charts` (HTML and SVG
building blocks), `sections` and `pages` (page bodies), `api` and `site` (the routers), `app`.
"""

from tessera.explorer.web.app import create_app

__all__ = ["create_app"]
