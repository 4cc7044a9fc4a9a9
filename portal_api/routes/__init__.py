"""HTTP routes, one module per audience; all data access goes through :mod:`portal_api.access`."""
