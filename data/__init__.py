"""Small shipped assets and the registry of public datasets (see ``data.registry``)."""
