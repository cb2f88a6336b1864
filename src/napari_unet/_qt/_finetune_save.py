"""The Fine-tune panel's **Save model…**: the file dialog, the question before replacing a file,
and the atomic write in a worker thread (a ``.pt`` model file, or a ``.zip`` BioImage.IO
package when the name asks for one)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from napari_unet._qt._controls import ask_save_path, confirm_overwrite
from napari_unet._qt._finetune_job import save_model_file, save_package_file
from napari_unet._qt._worker import Job, call_once, run_shielded, start_job, tell_user


class ModelSaving:
    """A mixin of :class:`~napari_unet._qt.finetune_widget.FineTuneWidget`: saving the model a
    run kept (``result_entry``) while no run (``job``) is going, with news in ``status``."""

    def ask_save_path(self) -> str:
        """Ask where to save the model; ``""`` when cancelled (:meth:`save_model` asks about an
        existing file itself, for every way a path can come in)."""
        return ask_save_path(
            self,
            "Save the fine-tuned model",
            "fine-tuned.pt",
            "U-Net model (*.pt);;BioImage.IO model package (*.zip)",
        )

    def confirm_overwrite(self, path: Path) -> bool:
        """Ask whether to replace the existing file ``path``; ``True`` means yes."""
        return confirm_overwrite(self, path)

    def save_model(self) -> Job | None:
        """Write the last fine-tuned model to a file the user picks (atomic write, in a worker
        thread); an existing file is replaced only after the user confirmed. Returns the job, or
        ``None`` when nothing is written."""
        if self.job is not None and self.job.running:
            tell_user("Saving the model failed: stop the training first (the last step is kept).")
            return None
        entry = self.result_entry
        if entry is None:
            tell_user("Saving the model failed: fine-tune a model first.")
            return None
        chosen = self.ask_save_path()
        if not chosen:
            return None
        path = Path(chosen).expanduser()
        package = path.suffix.lower() == ".zip"  # the format follows the name (and the filter)
        if not package and path.suffix.lower() != ".pt":
            path = path.with_name(path.name + ".pt")
        if path.is_dir():
            tell_user(f"Saving the model failed: {path} is a folder.")
            return None
        if path.exists() and not self.confirm_overwrite(path):
            self.status.value = f"not saved: {path.name} exists"
            return None
        self.status.value = f"saving {path.name}…"
        self.save_job = start_job(
            call_once,
            run_shielded,
            save_package_file if package else save_model_file,
            path,
            entry,
            what="Saving the model",
            show_progress=False,
            on_done=partial(self._saved, path),
        )
        return self.save_job

    def _saved(self, path: Path, job: Job) -> None:
        """A save ended: say where the model went, or that it was not saved (the notification
        says why), instead of 'saving …' for ever."""
        if job.error is None and job.result is not None:
            text = f"saved {job.result}"
        else:
            text = f"not saved: {path.name}{' (see the notification)' if job.error else ''}"
        try:
            self.status.value = text
        except RuntimeError:  # the panel was deleted while the save went on
            pass
