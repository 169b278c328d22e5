"""ipywidgets explorers: move a control, the picture is redrawn.

    Explorer                      controls + render(**values) → matplotlib figure → PNG
     └─ DetectionExplorer         picks an image and one of its detections (cached model runs)
         └─ BlendingExplorer      (a) attention, basis crops, products, mask, GT   (Eq. 1–4)
    BasesExplorer                 (b) a slider over the K bases of an image

Every picture is made by a plain function of `viz.blending` that the explorer only wraps, so
a notebook can call the same function for a static figure. The picture lives in an
`ipywidgets.Image` (PNG bytes), which also makes the explorers testable headless: set a
control's `.value` and `.png` changes.

Where widgets are not rendered (GitHub, nbviewer without widget state), displaying an
explorer still shows a PNG of its current state: its display bundle carries the widget view
*and* `image/png`, and each front end picks the richest type it knows.

A future explorer of one detection under every fusion of the zoo is a `DetectionExplorer`
whose `render` draws one row per model; picking the image and detection is already here.
"""

from __future__ import annotations

import base64
import io

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch

from .blending import detection_intermediates, plot_basis, plot_detection_blending
from .blendmask_figures import gt_crop_for


def figure_png(fig, dpi: int = 80) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


class Explorer:
    """Controls (name → ipywidget with a `.value`) and a `render(**values)` → Figure."""

    def __init__(self, controls: dict[str, widgets.ValueWidget], dpi: int = 80):
        self.controls = controls
        self.dpi = dpi
        self.image = widgets.Image(format="png")
        self.renders = 0  # how many times the picture was drawn (tests read it)
        self._updating = False
        for name, control in controls.items():
            control.observe(lambda change, name=name: self._changed(name), names="value")
        self.widget = widgets.VBox([widgets.HBox(list(controls.values())), self.image])
        self.refresh()

    # -- to implement ---------------------------------------------------------------------
    def render(self, **values):
        raise NotImplementedError

    def on_change(self, name: str) -> None:
        """Called when control `name` changed, before redrawing: adjust other controls here."""

    # -- machinery ------------------------------------------------------------------------
    def values(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    @property
    def png(self) -> bytes:
        return bytes(self.image.value)

    def refresh(self) -> None:
        self.image.value = figure_png(self.render(**self.values()), self.dpi)
        self.renders += 1

    def _changed(self, name: str) -> None:
        if self._updating:  # a control set by on_change: redraw once, at the end
            return
        self._updating = True
        try:
            self.on_change(name)
        finally:
            self._updating = False
        self.refresh()

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["image/png"] = base64.b64encode(self.png).decode("ascii")
        state = ", ".join(f"{k}={v}" for k, v in self.values().items())
        bundle["text/plain"] = f"{type(self).__name__}({state}): run the notebook to use it"
        return bundle


class DetectionExplorer(Explorer):
    """An image slider over `dataset` and a drop-down of that image's detections.

    `model` is an `InstanceSegmenter` in eval mode; its outputs are cached per image.
    """

    def __init__(self, model, dataset, class_names, max_detections: int = 20, dpi: int = 80):
        self.model, self.dataset, self.class_names = model, dataset, class_names
        self.max_detections = max_detections
        self._cache: dict[int, tuple] = {}
        image = widgets.IntSlider(0, 0, len(dataset) - 1, description="image")
        detection = widgets.Dropdown(description="detection")
        self._controls = {"image": image, "detection": detection}
        self._set_detections(0)
        super().__init__(self._controls, dpi)

    def predict(self, index: int) -> tuple:
        """(image [3, H, W], target, run's masks dict, result dict) of dataset item `index`."""
        if index not in self._cache:
            image, target = self.dataset[index]
            device = next(self.model.parameters()).device
            with torch.inference_mode():
                run = self.model.run([image.to(device)])
                result = self.model.postprocess(run)[0]
            masks = run["masks"][0] if "masks" in run else None
            self._cache[index] = (image, target, masks, {k: v.cpu() for k, v in result.items()})
        return self._cache[index]

    def _set_detections(self, index: int) -> None:
        result = self.predict(index)[3]
        n = min(len(result["boxes"]), self.max_detections)
        options = [
            (f"{i}: {self.class_names[int(result['labels'][i]) - 1]} "
             f"{float(result['scores'][i]):.2f}", i)
            for i in range(n)
        ] or [("no detection", -1)]  # fmt: skip
        self._controls["detection"].options = options
        self._controls["detection"].value = options[0][1]  # the best detection

    def on_change(self, name: str) -> None:
        if name == "image":
            self._set_detections(self.controls["image"].value)


class BlendingExplorer(DetectionExplorer):
    """(a) A detection's attention (M×M and upsampled, after softmax), basis crops, the
    products and the blended mask next to the GT (`plot_detection_blending`)."""

    def render(self, image: int, detection: int):
        img, target, masks, result = self.predict(image)
        if detection < 0:
            fig, ax = plt.subplots(figsize=(3, 3))
            ax.imshow(img.permute(1, 2, 0).clamp(0, 1))
            ax.set_title(f"image {image}: no detection")
            ax.set_axis_off()
            return fig
        box = result["boxes"][detection]
        inter = detection_intermediates(masks, detection)
        name = self.class_names[int(result["labels"][detection]) - 1]
        title = f"image {image}, #{detection}: {name} {float(result['scores'][detection]):.2f}"
        gt = gt_crop_for(box, target, inter["masks"].shape[-1])
        return plot_detection_blending(img, box, inter, title, gt)


class BasesExplorer(Explorer):
    """(b) A slider over the K bases of one image (`plot_basis`), and one over the images."""

    def __init__(self, model, dataset, dpi: int = 80):
        self.model, self.dataset = model, dataset
        self._cache: dict[int, tuple] = {}
        K = self.bases(0)[1].shape[0]
        controls = {
            "image": widgets.IntSlider(0, 0, len(dataset) - 1, description="image"),
            "basis": widgets.IntSlider(1, 1, K, description="basis"),  # 1..K as in the titles
        }
        super().__init__(controls, dpi)

    def bases(self, index: int) -> tuple:
        """(image, bases [K, H/4, W/4], target) of dataset item `index`, cached."""
        if index not in self._cache:
            image, target = self.dataset[index]
            device = next(self.model.parameters()).device
            with torch.inference_mode():
                bases = self.model.run([image.to(device)])["masks"][0]["bases"].cpu()
            self._cache[index] = (image, bases, target)
        return self._cache[index]

    def render(self, image: int, basis: int):
        img, bases, target = self.bases(image)
        return plot_basis(img, bases, basis - 1, target)
