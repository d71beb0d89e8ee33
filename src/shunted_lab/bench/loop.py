"""`--loop-overhead`: the LightningModule against a bare loop, and the SHAPES loader's speed."""

import statistics
import time
from functools import partial

import timm
import torch
from omegaconf import OmegaConf

from ..config import CONF_DIR, GRAPH_MODES
from ..training.graphs.engine import GraphContext, GraphedAdamW, StaticBatch
from .measure import AUTOCAST_DTYPES, COMPILED_MODES, backward, optimizer_step, sync

# The training recipe of a default run (the module has no defaults of its own).
OPTIM_DEFAULTS = CONF_DIR / "optim" / "default.yaml"


def loop_overhead(args) -> dict:
    """Training steps/s of the LightningModule, with a run's per-step callbacks (throughput, the
    non-finite loss guard), vs a bare PyTorch loop (same model, mode, precision, loader, optimizer;
    in a graph mode the same graphed step), alternating bare and Lightning runs for `--rounds` rounds, and how fast the
    SHAPES loader delivers images vs how fast the model eats them. The model is the first of
    `--models` at `--image-size`, in the last of `--modes`."""
    import lightning as L

    from ..data import ShapesData
    from ..training.callbacks import NonFiniteLossGuard, TrainThroughput
    from ..training.classifier import ImageClassifier

    device, mode = torch.device(args.device), args.modes[-1]
    data = ShapesData(
        name="shapes",
        num_train=args.batch_size * (args.iters + args.warmup),
        batch_size=args.batch_size,
        image_size=args.image_size,
    )
    data.setup()
    autocast = torch.autocast(device.type, dtype=AUTOCAST_DTYPES[args.precision], enabled=args.precision != "fp32")

    def fresh_model():
        """The same model for both loops, compiled as ImageClassifier(compile=...) would compile it."""
        torch.manual_seed(0)
        model = timm.create_model(args.models[0], num_classes=data.num_classes)
        if mode in COMPILED_MODES:
            model.compile_blocks(backend=args.compile_backend)
        return model

    def bare() -> float:
        model = fresh_model().to(device).train()
        if mode in GRAPH_MODES:  # the module's graphed step: static batch, captured step (training/graphs/engine.py)
            optimizer, batch = GraphedAdamW(model.parameters(), lr=1e-3, graphs=GraphContext(device)), StaticBatch()
        else:
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)  # as the module's
        for i, (x, y) in enumerate(data.train_dataloader()):
            if i == args.warmup:
                sync(device)
                start = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if mode in GRAPH_MODES:
                batch.load(x, y)
                x, y = batch.tensors
            with autocast:
                optimizer_step(optimizer, partial(backward, model, x, y))
        sync(device)
        return args.iters / (time.perf_counter() - start)

    def lightning() -> float:
        timer = TrainThroughput(warmup_batches=args.warmup)
        trainer = L.Trainer(
            accelerator="gpu" if device.type == "cuda" else "cpu",
            precision={"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}[args.precision],
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[timer, NonFiniteLossGuard()],  # a run's per-step check (it reads the loss: a sync)
        )
        recipe = {**OmegaConf.to_container(OmegaConf.load(OPTIM_DEFAULTS)), "label_smoothing": 0.0, "warmup_epochs": 0}
        # The blocks are compiled already (fresh_model): the module adds the graphed step, not compilation.
        graphed = "cudagraphs-eager" if mode in GRAPH_MODES else False
        module = ImageClassifier(fresh_model(), data.num_classes, compile=graphed, **recipe)
        trainer.fit(module, datamodule=data)
        return timer.images_per_sec / args.batch_size

    bare()  # the process's first run pays for allocator growth and oneDNN kernel creation: not counted
    runs = {"bare": [], "lightning": []}
    for i in range(args.rounds):
        order = ("bare", "lightning") if i % 2 == 0 else ("lightning", "bare")
        for name in order:
            runs[name].append(bare() if name == "bare" else lightning())
        print(
            f"round {i + 1}/{args.rounds}: bare {runs['bare'][-1]:.2f}, Lightning {runs['lightning'][-1]:.2f} steps/s"
        )
    bare_steps, lightning_steps = (statistics.median(runs[k]) for k in ("bare", "lightning"))

    start = time.perf_counter()
    loaded = sum(len(x) for x, _ in data.train_dataloader())
    loader_images = loaded / (time.perf_counter() - start)
    return dict(
        model=args.models[0],
        mode=mode,
        bare_steps_per_s=bare_steps,
        lightning_steps_per_s=lightning_steps,
        lightning_vs_bare=lightning_steps / bare_steps,
        lightning_vs_bare_per_round=[a / b for a, b in zip(runs["lightning"], runs["bare"], strict=True)],
        rounds=runs,
        loader_images_per_s=loader_images,
        model_train_images_per_s=bare_steps * args.batch_size,
        loader_vs_model=loader_images / (bare_steps * args.batch_size),
    )
