"""AlexNet backbone and the HashNet model."""
import utils  # noqa: F401  (silences Paddle's import-time ccache warning)
from models.hashnet import HashNet, load_backbone

__all__ = ["HashNet", "load_backbone"]
