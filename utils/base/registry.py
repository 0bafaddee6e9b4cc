"""One registry type for every kind of plug-in: networks (``--arch``), recipes
(``--recipe``), methods (``--method``) and index backends (``--index``).

A plug-in is a class in a file of its own, registered by a decorator there::

    @ARCHS.register("alexnet")
    class AlexNetHash(HashModel): ...

plus one import line in its package's ``__init__``. The registry is a dict
(name -> class), so argparse takes a flag's choices from it and the contract
tests loop over it.
"""
from utils.base.errors import UserError


class Registry(dict):
    """name -> class for the plug-ins of ``flag``; ``register`` sets the
    class's ``attribute`` to its name."""

    def __init__(self, flag, attribute):
        super().__init__()
        self.flag, self.attribute = flag, attribute

    def register(self, name):
        """Class decorator: make ``name`` a choice of the flag."""
        def add(cls):
            if name in self and self[name] is not cls:
                raise ValueError(f"{self.flag} {name} is registered twice "
                                 f"({self[name].__name__}, {cls.__name__})")
            setattr(cls, self.attribute, name)
            self[name] = cls
            return cls
        return add

    def unregister(self, name):
        """Remove ``name`` (tests that register a plug-in of their own)."""
        self.pop(name, None)

    def lookup(self, name):
        """The class registered as ``name``; a one-line error naming the choices."""
        if name not in self:
            raise UserError(f"unknown {self.flag} {name!r} (choose from {', '.join(sorted(self))})")
        return self[name]
