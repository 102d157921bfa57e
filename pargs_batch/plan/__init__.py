"""What fits where, decided once before any model loads: memory per device from each checkpoint's config.json
(``memory``, ``shapes``, ``measure``) and where each model runs (``placement``)."""
