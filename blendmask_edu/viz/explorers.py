"""ipywidgets explorers: move a control, the picture is redrawn.

    Explorer                      controls + render(**values) → matplotlib figure → PNG
     ├─ DetectionExplorer         picks an image and one of its detections (cached model runs)
     │   ├─ BlendingExplorer      (a) attention, basis crops, products, mask, GT   (Eq. 1–4)
     │   └─ ZooExplorer           (c) one detection under every mask branch of the zoo
     └─ BasesExplorer             (b) a slider over the K bases of an image

Every picture is made by a plain function of `viz.blending` or `viz.fusion_figures` that the
explorer only wraps, so a notebook can call the same function for a static figure. The picture lives in an
`ipywidgets.Image` (PNG bytes), which also makes the explorers testable headless: set a
control's `.value` and `.png` changes.

Where widgets are not rendered (GitHub, nbviewer without widget state), displaying an
explorer still shows a PNG of its current state: its display bundle carries the widget view
*and* `image/png`, and each front end picks the richest type it knows.
"""

from __future__ import annotations

import base64
import io
from typing import NamedTuple

import matplotlib.pyplot as plt
import torch

from ..extras import require
from .blending import detection_intermediates, plot_basis, plot_detection_blending
from .blendmask_figures import gt_crop_for
from .fusion_figures import masks_for_detection, plot_zoo_detection

widgets = require("ipywidgets")  # the notebooks extra; the rest of the library runs without it


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


class Prediction(NamedTuple):
    """What a `DetectionExplorer` keeps of one image: the model's outputs at inference."""

    image: torch.Tensor  # [3, H, W]
    target: dict  # the GT
    masks: dict | None  # the mask branch's outputs (`run(...)["masks"][0]`)
    result: dict  # `postprocess`: boxes, scores, labels, masks (pasted)
    detections: dict  # FCOS' detections (boxes, scores, labels, loc_index)


class DetectionExplorer(Explorer):
    """An image slider over `dataset` and a drop-down of that image's detections.

    `model` is an `InstanceSegmenter` in eval mode; its outputs are cached per image.
    """

    def __init__(self, model, dataset, class_names, max_detections: int = 20, dpi: int = 80):
        self.model, self.dataset, self.class_names = model, dataset, class_names
        self.max_detections = max_detections
        self._cache: dict[int, Prediction] = {}
        image = widgets.IntSlider(0, 0, len(dataset) - 1, description="image")
        detection = widgets.Dropdown(description="detection")
        self._controls = {"image": image, "detection": detection}
        self._set_detections(0)
        super().__init__(self._controls, dpi)

    def predict(self, index: int) -> Prediction:
        """The model's outputs on dataset item `index` (cached)."""
        if index not in self._cache:
            image, target = self.dataset[index]
            device = next(self.model.parameters()).device
            with torch.inference_mode():
                run = self.model.run([image.to(device)])
                result = self.model.postprocess(run)[0]
            masks = run["masks"][0] if "masks" in run else None
            cpu = lambda d: {k: v.cpu() for k, v in d.items()}  # noqa: E731
            detections = cpu(run["fcos"]["detections"][0])
            self._cache[index] = Prediction(image, target, masks, cpu(result), detections)
        return self._cache[index]

    def _set_detections(self, index: int) -> None:
        result = self.predict(index).result
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

    def no_detection(self, image: int):
        fig, ax = plt.subplots(figsize=(3, 3))
        ax.imshow(self.predict(image).image.permute(1, 2, 0).clamp(0, 1))
        ax.set_title(f"image {image}: no detection")
        ax.set_axis_off()
        return fig

    def title(self, image: int, detection: int) -> str:
        result = self.predict(image).result
        name = self.class_names[int(result["labels"][detection]) - 1]
        return f"image {image}, #{detection}: {name} {float(result['scores'][detection]):.2f}"


class BlendingExplorer(DetectionExplorer):
    """(a) A detection's attention (M×M and upsampled, after softmax), basis crops, the
    products and the blended mask next to the GT (`plot_detection_blending`)."""

    def render(self, image: int, detection: int):
        if detection < 0:
            return self.no_detection(image)
        pred = self.predict(image)
        box = pred.result["boxes"][detection]
        inter = detection_intermediates(pred.masks, detection)
        gt = gt_crop_for(box, pred.target, inter["masks"].shape[-1])
        return plot_detection_blending(pred.image, box, inter, self.title(image, detection), gt)


class ZooExplorer(DetectionExplorer):
    """(c) One detection under every mask branch of the zoo, side by side
    (`plot_zoo_detection`).

    `models`: label → `InstanceSegmenter` (eval mode), one per branch. The image's detections
    are those of the `reference` model (default: the first); every model's mask branch then
    makes a mask for the *same* box, read at the same FPN location (each model has its own
    backbone, FPN and FCOS, trained with its branch, so features differ too)."""

    def __init__(self, models: dict, dataset, class_names, reference: str | None = None,
                 max_detections: int = 20, dpi: int = 80):  # fmt: skip
        self.models = dict(models)
        self.reference = reference or next(iter(self.models))
        self._outputs: dict[tuple[int, int], dict] = {}
        super().__init__(self.models[self.reference], dataset, class_names, max_detections, dpi)

    def outputs(self, image: int, detection: int) -> dict[str, dict]:
        """label → the branch's outputs for detection `detection` of image `image` (cached)."""
        if (image, detection) not in self._outputs:
            pred = self.predict(image)
            keys = ("boxes", "scores", "labels", "loc_index")
            one = {k: pred.detections[k][detection : detection + 1] for k in keys}
            self._outputs[image, detection] = {
                label: masks_for_detection(model, pred.image, one)
                for label, model in self.models.items()
            }
        return self._outputs[image, detection]

    def render(self, image: int, detection: int):
        if detection < 0:
            return self.no_detection(image)
        pred = self.predict(image)
        box = pred.detections["boxes"][detection]
        outputs = self.outputs(image, detection)
        R = next(iter(outputs.values()))["masks"].shape[-1]
        gt = gt_crop_for(box, pred.target, R)
        title = f"{self.title(image, detection)} (found by {self.reference})"
        return plot_zoo_detection(pred.image, box, outputs, gt, title)


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
