"""User-facing errors.

Everything a user can cause (an unknown model name, a bad path, a wrong input shape) raises a
subclass of :class:`CnnzooError`; the CLI turns it into one line and a non-zero exit, and lets any
other exception surface as the bug it is.
"""


class CnnzooError(Exception):
    """An error caused by what the user asked for, worth one clear line."""


class UnknownModelError(CnnzooError, KeyError):
    # KeyError too, so `except KeyError` around a registry lookup keeps working.
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InputSizeError(CnnzooError, ValueError):
    """An input whose shape the network cannot take."""


class WeightsError(CnnzooError):
    """A weights file that is missing, unsafe or made for another architecture."""


class DataError(CnnzooError):
    """A dataset path or name that cannot be used."""
