"""Entry point for the ``feast`` CLI (``feast -c features plan``): the objects of
``definitions.build`` for the settings found from the working directory."""

from propensity.config import load_settings

from definitions import build  # noqa: E402  (the feast CLI puts this folder on sys.path)

for _obj in build(load_settings()):
    globals()[f"{type(_obj).__name__.lower()}_{_obj.name}"] = _obj
