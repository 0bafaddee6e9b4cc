# Makes the repo root importable for pytest (tests import models/, utils/).
