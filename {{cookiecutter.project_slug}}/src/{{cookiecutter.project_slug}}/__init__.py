"""Your service: its settings, models, queries (and with the web service its routes) at this
level; the template's machinery, which template updates maintain, in `core/`."""
