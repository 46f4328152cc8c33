"""Exceptions raised by the runtime."""


class InputError(ValueError):
    """Images given to `predict`/`embed` do not fit the model; the message says how to fix them."""


class ModelError(ValueError):
    """The model file is missing, unreadable, or not a semobridge export."""
