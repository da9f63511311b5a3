"""One module per family; importing this package registers every model.

Families are discovered, not listed, so adding a family is adding a file.
"""
import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_") and _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")
