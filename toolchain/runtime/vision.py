"""The image-classification runtime class: images in (runtime/images.py), one graph run per batch, labels out.

    clf = load("dist/shapes-vit")
    clf.classify(["a.png", open("b.png", "rb").read(), pil_image, hwc_uint8_array])
    # -> [{"label": "circle", "score": 0.97}, ...]; classify_image() is the same method

Preprocessing (resize, rescale, normalise, channels first) follows the artifact's ``preprocess`` section,
written at export from the model's Hugging Face image processor; Pillow is the runtime's ``vision`` extra.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Model, register_runtime
from .encoders import softmax
from .errors import ArtifactError
from .images import MAX_PIXELS, image_items, load_images, pixel_values


class ImageClassifier(Model):
    """An image-classification artifact: ``classify(images)`` (also ``classify_image``) -> top label and score
    per image; ``scores(images)`` -> probabilities. Thread-safe: nothing of a call is kept on the instance.

    ``max_pixels`` bounds each decoded image (decompression bombs are refused before they are decoded)."""

    max_pixels: int = MAX_PIXELS

    def _prepare(self) -> None:
        self._preprocess = self.manifest.preprocess  # ArtifactError when the manifest has none
        inputs = [i.name for i in self._session.get_inputs()]
        if len(inputs) != 1:
            raise ArtifactError(f"{self.manifest.root} has a graph with inputs {inputs}, but an image classifier "
                                "takes one (the pixel values); re-export it with --task image-classification.")
        self._input = inputs[0]

    def warmup_input(self) -> Any:
        p = self._preprocess
        return [np.zeros((p.height, p.width, 3), dtype=np.uint8)]

    def encode(self, images: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Images into the graph's feeds ({input: float32 (N, 3, H, W)}) and a mask of ones (N, 1)."""
        pixels = pixel_values(load_images(image_items(images), 0, self.max_pixels), self._preprocess)
        return {self._input: pixels}, np.ones((len(pixels), 1), dtype=np.int64)

    def scores(self, images: Any) -> np.ndarray:
        """Class probabilities (n, classes), in the order of the manifest's labels; batch_size images per run."""
        items = image_items(images)
        self._count_call()
        out = []
        for start in range(0, len(items), self.batch_size):
            batch = load_images(items[start : start + self.batch_size], start, self.max_pixels)
            logits = self.run_feeds({self._input: pixel_values(batch, self._preprocess)})
            out.append(softmax(logits.astype(np.float64)))
        return np.concatenate(out).astype(np.float32)

    def classify_image(self, images: Any) -> list[dict[str, Any]]:
        """The top label and its probability per image: ``[{"label": ..., "score": ...}]``."""
        probs = self.scores(images)
        labels = self.manifest.labels or [f"LABEL_{i}" for i in range(probs.shape[1])]
        return [{"label": labels[int(i)], "score": float(p[int(i)])} for p, i in zip(probs, probs.argmax(axis=1))]

    def classify(self, images: Any) -> list[dict[str, Any]]:
        """The same as classify_image(): an image classifier classifies images."""
        return self.classify_image(images)


register_runtime("image-classification", ImageClassifier)
