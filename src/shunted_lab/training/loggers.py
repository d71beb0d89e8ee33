"""A run's loggers: built from its config (conf/logger), what every task logs to them, and their end;
and the two logger classes the configs name, Lightning's with what this project needs.

Used by training (fit.py) and by the tasks on trained checkpoints (checkpoints/tasks.py).

AppendingCSVLogger: Lightning's CSV writer deletes an existing metrics.csv when it starts, so resuming into a run
directory, or evaluating after `fit` in a process spawned by ddp_spawn, would erase the log of
the earlier process: this one appends to it, under its header. A row is on disk as soon as it is
logged, so a kill -9 loses none (an epoch's closing rows, logged after the checkpoint saved at its
validation's end, are never logged again by a resume). A row logged again (the same step, the same
keys: a resumed run redoing the steps after its checkpoint) replaces the one on disk, so each is there once.
"""

import csv
import io
from pathlib import Path

from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from omegaconf import DictConfig, OmegaConf

from ..exits import EXIT_PREEMPTED
from ..files import atomic_write, signals_held
from ..run_dirs import WANDB_ID_FILE, sweep_tag
from ..wandb_env import wandb_offline


def row_id(row: dict) -> tuple[int, frozenset]:
    """What a row of the log holds: its step and the keys it has values for (a value read back from
    the file is a string, empty where the row has none)."""
    return int(float(row["step"])), frozenset(k for k, v in row.items() if k != "step" and v not in ("", None))


def file_state(path: Path) -> tuple | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_size, stat.st_mtime_ns


def read_log(path: Path) -> tuple[list[str], list[dict]]:
    if not path.is_file():
        return [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


class AppendingExperimentWriter(ExperimentWriter):
    def __init__(self, log_dir: str):
        super().__init__(log_dir)
        self.header: list[str] = []
        self.written: set = set()  # the ids of the rows on disk
        self.on_disk: tuple | None = ()  # the file's size and time when this writer last read or wrote it

    def _check_log_dir_exists(self) -> None:
        """Keep an existing metrics.csv (Lightning deletes it here)."""

    def save(self) -> None:
        if not self.metrics:
            return
        path = Path(self.metrics_file_path)
        if file_state(path) != self.on_disk:  # another process of the run wrote it: a stopped one, a spawned stage
            self.header, rows = read_log(path)
            self.written = {row_id(row) for row in rows}
        logged = {row_id(row) for row in self.metrics}
        keys = sorted(set(self.header).union(*self.metrics))
        if keys != self.header or logged & self.written:  # a new column, or rows logged again: a whole new file
            rows = [row for row in read_log(path)[1] if row_id(row) not in logged] + self.metrics
            atomic_write(path, lambda f: f.write(csv_text(keys, rows).encode()))
            self.written = {row_id(row) for row in rows}
        else:
            with signals_held(), open(path, "a", newline="") as f:
                f.write(csv_text(keys, self.metrics, header=False))
            self.written |= logged
        self.header, self.metrics, self.on_disk = keys, [], file_state(path)


def csv_text(keys: list[str], rows: list[dict], header: bool = True) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=keys)
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


class AppendingCSVLogger(CSVLogger):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("flush_logs_every_n_steps", 1)  # each row on disk when it is logged
        super().__init__(*args, **kwargs)

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment


class WandbResultsLogger(WandbLogger):
    """Lightning's WandbLogger, whose run also gets, at the end of fit (`log_fit_end`), the best
    checkpoint as a model artifact (`log_model`), a table of validation predictions and a confusion matrix.

    The artifact is the file the atomic checkpoint IO finished writing, copied into W&B's staging area
    when it is logged: ModelCheckpoint deleting a superseded best file later cannot break the upload.
    Lightning's own `log_model` is never used: it would also upload last.ckpt, a resume file.
    """

    def __init__(self, *args, log_model: bool = False, predictions: int = 32, confusion_matrix: bool = True, **kw):
        if kw.get("offline"):  # Lightning says so through WANDB_MODE, which wandb reads once per process
            kw["mode"] = "offline"
        # W&B's own end-of-run history and summary would bury the run's last lines (run.py says where it wrote).
        kw.setdefault("settings", {"quiet": True})
        super().__init__(*args, log_model=False, **kw)
        self._wandb_init.pop("anonymous")  # Lightning passes it, and wandb warns that it has no effect
        self.upload_best_checkpoint = log_model
        self.num_predictions = predictions
        self.log_confusion_matrix = confusion_matrix

    def log_fit_end(self, media: dict, best_checkpoint: str, metadata: dict) -> None:
        """The best checkpoint's validation `media` (class_predictions.wandb_media), the checkpoint as an artifact."""
        import wandb

        run = self.experiment
        if media:
            run.log(media)
        if self.upload_best_checkpoint and best_checkpoint:
            artifact = wandb.Artifact(f"model-{run.id}", type="model", metadata=metadata)
            artifact.add_file(best_checkpoint, name=Path(best_checkpoint).name)
            run.log_artifact(artifact, aliases=["best", "latest"])


def build_loggers(cfg: DictConfig) -> list:
    loggers = []
    for logger_cfg in (cfg.get("logger") or {}).values():
        logger_cfg = OmegaConf.to_container(logger_cfg, resolve=True)
        if logger_cfg["_target_"].endswith(("WandbLogger", "WandbResultsLogger")):  # ours, or Lightning's
            logger_cfg["offline"] = wandb_offline(logger_cfg["offline"])
            id_file = Path(cfg.paths.output_dir) / WANDB_ID_FILE
            if logger_cfg["id"] is None and id_file.is_file():  # a resumed run continues its W&B run
                logger_cfg.update(id=id_file.read_text().strip(), resume="allow")
            if logger_cfg.get("log_model") is None:  # a sweep would upload every job's checkpoint
                logger_cfg["log_model"] = cfg.get("sweep_id") is None
            if cfg.get("sweep_id") is not None:
                logger_cfg["tags"] = [*logger_cfg["tags"], sweep_tag(cfg.sweep_id)]
        loggers.append(instantiate(logger_cfg))
    return loggers


def close_loggers(loggers: list, status: str) -> None:
    """Flush and close every logger; `status` is success, failed or preempted (W&B marks the run so)."""
    for logger in loggers:
        logger.finalize("success" if status == "success" else "failed")
    if not any(isinstance(lg, WandbLogger) for lg in loggers):
        return
    import wandb

    if status == "preempted" and wandb.run is not None:
        wandb.run.mark_preempting()
    wandb.finish(exit_code={"success": 0, "failed": 1}.get(status, EXIT_PREEMPTED))


def log_analysis(loggers: list, result: dict, out: Path, prefix: str = "analysis") -> None:
    """The analysis's summary as metrics and, on W&B, its figures as images."""
    for logger in loggers:
        logger.log_metrics({f"{prefix}/{k}": v for k, v in result["summary"].items()})
        if isinstance(logger, WandbLogger):
            for name in result["figures"]:
                logger.log_image(key=f"{prefix}/{Path(name).stem}", images=[str(out / name)])
