"""``modelyard ui``: the web app over runs, models, pipelines, features, serving and drift.

See ``docs/ui.md``.
"""
