"""The twin you can see: a web dashboard, a JSON API and a live stream over the twin store.

``twinlink dashboard --db twin.db`` serves it (see :mod:`twinlink.cli.dashboard_cmds`);
:func:`~twinlink.dashboard.app.create_app` builds the aiohttp application for tests and
embedding. Needs the ``twin`` extra (``pip install 'twinlink[twin]'``: aiohttp and Jinja2);
the device side never imports this package.

- :mod:`.app` — routes, access control middleware, security headers;
- :mod:`.auth` — the token file, bearer tokens, session cookies, same-origin checks;
- :mod:`.model` — what pages and API show, from the :class:`~twinlink.store.TwinStore` alone;
- :mod:`.stream` — the Server-Sent Events hub and the resumable stream cursor;
- :mod:`.plot` — server-drawn SVG plots;
- :mod:`.openapi` — the API's OpenAPI description (docs/openapi.json is generated from it).
"""
