"""Data: the synthetic texture-scene generator and dataset export."""

from texseg.data.kernels import gaussian_smooth, gaussian_weights
from texseg.data.scene import SceneSpec, estimate_memory_bytes, generate, generate_data, target_from_labels

__all__ = ["SceneSpec", "generate", "generate_data", "gaussian_smooth", "gaussian_weights", "estimate_memory_bytes",
           "target_from_labels"]
