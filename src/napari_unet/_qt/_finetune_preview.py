"""The Fine-tune panel's preview: segment the plane on screen with the newest weights in a
worker thread (newest request wins) into one plugin layer, *<image> preview labels*, reused by
every run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari_unet._qt._finetune_job import preview_job, scored_preview_job
from napari_unet._qt._layers import (
    Layout,
    embedded_plane,
    layer_array,
    put_layer,
    show_segmentation,
    source_key,
)
from napari_unet._qt._segment_call import engine_options
from napari_unet._qt._worker import LatestOnly, run_shielded
from napari_unet.engine.wording import count

ROLE = "finetune"


class LivePreview:
    """Preview segmentations of one panel.

    Attributes
    ----------
    runner : the :class:`~napari_unet._qt._worker.LatestOnly` running them.
    source : what the last preview asked for segments with (``"step N"``, or a model's
        label), or ``None`` before the first.
    info : the panel's line that says what the preview shows.
    """

    def __init__(self, viewer: Any, info: Any) -> None:
        self.viewer = viewer
        self.info = info
        self.runner = LatestOnly("Preview")
        self.source: str | None = None

    def request(
        self,
        image_layer: Any,
        plane: tuple[Any, int | None],
        model: Callable[[], Any],
        label: str,
        *,
        options: dict[str, Any],
        device: str,
        painted: tuple[Any, Any] | None = None,
        on_score: Callable[[Any], None] | None = None,
        place: tuple[Layout, tuple[Any, ...]] | None = None,
    ) -> None:
        """Segment ``plane`` (``(image, channel_axis)``) of ``image_layer`` with ``model()`` and
        the Segment panel's ``options`` (``Session.segment_options``), as Segment would.

        With ``painted`` (the painted labels and regions of the run) the result is also scored
        against the painted cells and ``on_score`` gets the ``PaintedScore``. ``place``: the
        image's :class:`Layout` and the full ``plane_index`` of the plane; when planes follow
        Y or X (``YXZ``), the preview is put on that plane, in the image's label axes (as a
        2D layer it lay across X and Z).
        """
        image, channel_axis = plane
        options = engine_options(options, image_layer)
        self.source = label
        layout = Layout(tuple(image.shape), "YX" if channel_axis is None else "YXC")
        data = layer_array(image_layer)

        def shown(outcome: Any) -> None:
            if layer_array(image_layer) is not data:  # replaced meanwhile: of the old data
                return
            result, score = outcome if painted is not None else (outcome, None)
            self._show(image_layer, layout, result, label, place)
            if on_score is not None and score is not None:
                on_score(score)

        job, extra = (preview_job, ()) if painted is None else (scored_preview_job, painted)
        self.runner.submit(
            run_shielded,
            job,
            image,
            channel_axis,
            model,
            *extra,
            device=device,
            **options,
            on_result=shown,
        )

    def _show(
        self,
        image_layer: Any,
        layout: Layout,
        result: Any,
        label: str,
        place: tuple[Layout, tuple[Any, ...]] | None,
    ) -> None:
        if image_layer not in self.viewer.layers:
            return
        if place is not None and not place[0].label_axes.endswith("YX"):
            image_layout, index = place
            labels, geometry = embedded_plane(
                result.labels, image_layer, index, layout=image_layout
            )
            put_layer(  # the key of show_segmentation's labels: one preview layer per image
                self.viewer,
                labels,
                kind="labels",
                name=f"{image_layer.name} preview labels",
                key=f"{ROLE}:labels:{source_key(image_layer)}",
                role=ROLE,
                geometry=geometry,
            )
        else:
            show_segmentation(
                self.viewer,
                image_layer,
                layout,
                result,
                name=f"{image_layer.name} preview",
                key_prefix=ROLE,
            )
        n_cells = int(result.labels.max()) if result.labels.size else 0
        self.info.value = f"preview ({label}): {count(n_cells, 'cell')}"
