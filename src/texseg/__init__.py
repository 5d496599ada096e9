"""texseg: neural segmentation of controllable synthetic textures.

Data -> models -> training -> evaluation, each a subpackage; the names most used are
re-exported here::

    import texseg
    image, mask = texseg.generate_data(8)             # the notebook's generator, fast
    model = texseg.create_model("unet")
    model = texseg.load_model("runs/...")             # a trained run, eval mode
    probs = texseg.predict(model, image)
    labels = texseg.load_segmenter("gabor-kmeans").segment(image, 2)   # a classical method
"""

__version__ = "0.1.0"

from texseg.checkpoint import load_model, predict  # noqa: E402
from texseg.data import SceneSpec, generate, generate_data  # noqa: E402
from texseg.models import create_model, list_models  # noqa: E402
from texseg.segmenters import load_segmenter  # noqa: E402

__all__ = [
    "SceneSpec",
    "create_model",
    "generate",
    "generate_data",
    "list_models",
    "load_model",
    "load_segmenter",
    "predict",
    "__version__",
]
