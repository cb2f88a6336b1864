"""The Fine-tune panel's settings: the layers and training options a run reads, and the
request (:class:`~napari_unet._qt._finetune_job.FineTuneRequest`) gathered from them."""

from __future__ import annotations

from typing import Any

import napari
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    Label,
    SpinBox,
)

from napari_unet._qt._annotations import painted_plane, placement_warning
from napari_unet._qt._controls import (
    AxesFollower,
    axes_combo,
    border_weight_controls,
    chosen_axes,
    count_control,
    device_combo,
    diameter_field,
    image_combo,
    number_control,
    regions_combo,
    show_model_name,
)
from napari_unet._qt._finetune_checks import refuse_non_finite
from napari_unet._qt._finetune_job import FineTuneRequest
from napari_unet._qt._layers import current_image_plane, layer_combo, pick_default
from napari_unet._qt._lazy import is_lazy
from napari_unet._qt._segment_call import engine_options
from napari_unet.engine.train_config import (
    DEFAULT_LR,
    FINE_TUNE_FOREGROUND_FRACTION,
    MAX_LR,
    OPTIMIZERS,
    TrainConfig,
)

#: the most steps a run takes; the time budget usually ends it first on a CPU
DEFAULT_STEPS = 1000
#: minutes of training: the budget of the few-shot benchmark
DEFAULT_MINUTES = 2.0
#: an augmented tile is sent, and a CPU copy of the weights is taken (for the preview, and as a
#: fallback should training fail) at least, every this many steps
SAMPLE_EVERY = SNAPSHOT_EVERY = 10


class FineTuneSettings:
    """The settings part of the Fine-tune panel (a mixin: the panel has ``viewer`` and
    ``session``; :meth:`_build_settings` makes the controls its attributes)."""

    viewer: Any
    session: Any

    def _build_settings(self, viewer: Any) -> Container:
        """Make the controls and return them in a form."""
        self.image = image_combo(
            viewer, "The image the cells were painted on (its current plane is used)."
        )
        self.axes = axes_combo()
        self.labels = layer_combo(
            viewer,
            napari.layers.Labels,
            label="painted cells",
            exclude_plugin_layers=True,
            tooltip="A Labels layer with a few painted cells, one id per cell (0 = not painted).",
        )
        self.regions = regions_combo(
            viewer,
            "Optional: rectangles/polygons in which every cell is painted. Inside them "
            "unpainted pixels are background, outside they are ignored. Without regions the "
            "whole plane counts: unpainted pixels are background everywhere.",
        )
        pick_default(self.regions, lambda layer: True)  # a Shapes layer, if there is one
        self.start_model = Label(label="start from")
        show_model_name(self.start_model, self.session.current)
        self.minutes = number_control(
            "time budget (min)",
            DEFAULT_MINUTES,
            (0.0, 600.0),
            0.5,
            "Minutes of training; 0 = no limit (the steps only). Training stops after the step "
            "that reaches it, or after the steps below, whichever comes first.",
            slider=False,
        )
        self.steps = SpinBox(
            label="steps (at most)",
            value=DEFAULT_STEPS,
            min=1,
            max=100_000,
            tooltip="Training steps. Stop ends training early and keeps the model of that step.",
        )
        defaults = TrainConfig()
        self.optimizer = ComboBox(
            label="optimiser",
            choices=list(OPTIMIZERS),
            value=defaults.optimizer,
            tooltip="adam: quick fine-tuning; sgd: the paper's preset (momentum 0.99).",
        )
        self.lr = FloatSpinBox(
            label="learning rate", value=defaults.learning_rate, min=1e-6, max=MAX_LR, step=1e-4
        )
        self.lr.native.setDecimals(6)
        self.w0, self.sigma = border_weight_controls(
            sliders=False, w0_label="border weight w0", sigma_label="border width σ (px)"
        )
        self.augment = FloatSlider(
            label="augmentation strength",
            value=defaults.augment_strength,
            min=0.0,
            max=2.0,
            step=0.1,
            tooltip="Scales the elastic deformation, rotations, scaling and gray values; 0 = off.",
        )
        self.diameter = diameter_field(
            "Typical cell diameter in pixels; 0 measures the painted cells. The image is "
            "rescaled to the size the model was trained at."
        )
        self.tile_size = count_control(
            "tile size (px)",
            0,
            (0, 4096),
            "Side of the network's output tile per step; 0 chooses for the device.",
        )
        self.device = device_combo()
        self.preview_every = SpinBox(
            label="preview every (steps)",
            value=50,
            min=0,
            max=100_000,
            tooltip="Segment the current plane with the newest weights every this many steps "
            "and at the end; 0 = only on 'Refresh preview'.",
        )
        self.live_layers = CheckBox(
            text="show weight map and augmented tiles",
            value=False,
            tooltip="Show what the network is taught while it trains: the weight map and the "
            "deformed tiles, as visible layers. Off: they are added hidden (tick their eye in "
            "the layer list to watch them); without a GPU, each visible layer slows the "
            "viewer's repaints while training.",
        )
        form = Container(
            widgets=[
                self.image,
                self.axes,
                self.labels,
                self.regions,
                self.start_model,
                self.minutes,
                self.steps,
                self.optimizer,
                self.lr,
                self.w0,
                self.sigma,
                self.augment,
                self.diameter,
                self.tile_size,
                self.device,
                self.preview_every,
                self.live_layers,
            ]
        )

        self.optimizer.changed.connect(self._optimizer_changed)
        self.labels.changed.connect(self._follow_corrections)
        self._follow_corrections()
        self._axes_follower = AxesFollower(self, self.image, self.axes)
        return form

    def _follow_corrections(self, *_: Any) -> None:
        """Painted cells that are the corrections of a Segment result: pick the image that
        result segmented (the user can pick another after)."""
        from napari_unet._qt._correction_layers import image_of

        image = image_of(self.labels.value)
        if image is not None and image in self.viewer.layers and image is not self.image.value:
            self.image.value = image

    def _optimizer_changed(self, value: str) -> None:
        self.lr.value = DEFAULT_LR[value]

    def image_plane(self, layer: Any) -> tuple[Any, int | None]:
        """The plane of ``layer`` the viewer shows, ``(Y, X[, C])``, and its channel axis."""
        return current_image_plane(self.viewer, layer, axes=chosen_axes(self.axes, layer))

    # -- gathering the data --------------------------------------------------------------------
    def training_request(self) -> FineTuneRequest:
        """Collect the planes and settings of a run from the chosen layers.

        Raises ``ValueError`` with a sentence for the user when something is missing or does
        not fit (no layer, no painted cell on this plane, different shapes, no region drawn).
        """
        # label_plane: where the run's weight map is shown (the labels' own axes when planes
        # follow Y, X)
        axes = chosen_axes(self.axes, self.image.value)
        image, channel_axis, labels, regions, self.label_plane = painted_plane(
            self.viewer, self.image.value, self.labels.value, self.regions.value, axes=axes
        )
        if not is_lazy(image):  # at Start, naming the layer: the worker found it steps later
            refuse_non_finite(image, self.image.value.name)
        # a lazy (dask, zarr) plane is read, and checked with the same sentence, in the job
        # (finetune_job): read here it froze the panel for as long as the plane took to load
        preview = max(0, int(self.preview_every.value))
        config = TrainConfig(
            steps=int(self.steps.value),
            optimizer=self.optimizer.value,
            lr=float(self.lr.value),
            w0=float(self.w0.value),
            sigma=float(self.sigma.value),
            augment_strength=float(self.augment.value),
            tile_size=int(self.tile_size.value) or None,
            foreground_fraction=FINE_TUNE_FOREGROUND_FRACTION,
            sample_every=SAMPLE_EVERY,
            snapshot_every=preview if 0 < preview <= SNAPSHOT_EVERY else SNAPSHOT_EVERY,
            time_limit=60.0 * float(self.minutes.value) or None,
        )
        return FineTuneRequest(
            entry=self.session.current,
            image=image,
            channel_axis=channel_axis,
            labels=labels,
            regions=regions,
            config=config,
            device=self.device.value,
            diameter=float(self.diameter.value) or None,
            labels_name=self.labels.value.name,
            image_name=self.image.value.name,
            segment_options=engine_options(self.session.segment_options, self.image.value),
            warnings=tuple(
                filter(None, [placement_warning(self.image.value, self.labels.value, axes=axes)])
            ),
        )
